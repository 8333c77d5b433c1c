"""Placement groups for the colocated and disaggregated layouts (zerotir.distributed.placement)."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from zerotir.config import DistributedConfig  # noqa: E402
from zerotir.distributed.placement import Placement, local_num_cpus, plan, where  # noqa: E402


def cfg(layout: str, **kw) -> DistributedConfig:
    base = {"learners": 2, "rollout_workers": 3, "learner_cpus": 1, "rollout_cpus": 2, "learner_gpus": 1,
            "rollout_gpus": 1, "layout": layout}  # fmt: skip
    return DistributedConfig(**{**base, **kw})


@pytest.mark.unit
def test_disaggregated_gives_every_actor_its_own_bundle():
    p = plan(cfg("disaggregated"))
    assert p.bundles == [{"CPU": 1, "GPU": 1}] * 2 + [{"CPU": 2, "GPU": 1}] * 3
    assert [(s.bundle, s.cpus, s.gpus) for s in p.learners] == [(0, 1, 1), (1, 1, 1)]
    assert [(s.bundle, s.cpus, s.gpus) for s in p.workers] == [(2, 2, 1), (3, 2, 1), (4, 2, 1)]


@pytest.mark.unit
def test_colocated_puts_learner_k_and_worker_k_on_one_device():
    p = plan(cfg("colocated"))
    assert p.bundles == [{"CPU": 3, "GPU": 1}] * 2 + [{"CPU": 2, "GPU": 1}]
    assert [(s.bundle, s.gpus) for s in p.learners] == [(0, 0.5), (1, 0.5)]
    assert [(s.bundle, s.gpus) for s in p.workers] == [(0, 0.5), (1, 0.5), (2, 1.0)]


@pytest.mark.unit
def test_a_local_instance_has_the_cpus_the_actors_ask_for():
    """The issue's launch line (2 workers, 2 learners, 1 CPU each) on a 2-core machine used to wait out
    the placement timeout: a local instance had only the 2 CPUs Ray counted."""
    d = DistributedConfig(enabled=True, rollout_workers=2, learners=2)
    assert local_num_cpus(d, cpu_count=2) == 4
    assert local_num_cpus(d, cpu_count=16) == 16
    assert local_num_cpus(DistributedConfig(enabled=True, rollout_cpus=0.5, learner_cpus=0.5), 1) == 1
    assert local_num_cpus(DistributedConfig(enabled=True, num_cpus=3, rollout_workers=8), 2) == 3


def test_bundles_of_actors_that_ask_nothing_still_reserve_a_sliver():
    p = plan(cfg("disaggregated", learner_cpus=0, rollout_cpus=0, learner_gpus=0, rollout_gpus=0))
    assert all(b == {"CPU": 0.01} for b in p.bundles)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


@ray.remote
class Probe:
    def ok(self) -> bool:
        return True


@pytest.mark.ray
@pytest.mark.integration
@pytest.mark.parametrize("layout", ["colocated", "disaggregated"])
def test_actors_land_in_the_bundles_of_their_layout(local_ray, layout):
    d = DistributedConfig(learners=2, rollout_workers=3, learner_cpus=0.5, rollout_cpus=0, layout=layout)
    placement = Placement(d)
    try:
        table = ray.util.placement_group_table(placement.group)
        assert table["state"] == "CREATED" and table["strategy"] == "PACK"
        assert len(table["bundles"]) == (3 if layout == "colocated" else 5)
        learners = [Probe.options(**placement.learner(r)).remote() for r in range(2)]
        workers = [Probe.options(**placement.worker(j)).remote() for j in range(3)]
        pg = placement.group.id.hex()
        got_l = [where(a) for a in learners]
        got_w = [where(a) for a in workers]
        assert {g for g, _ in got_l + got_w} == {pg}
        if layout == "colocated":
            assert [b for _, b in got_l] == [[0], [1]] and [b for _, b in got_w] == [[0], [1], [2]]
        else:
            assert [b for _, b in got_l] == [[0], [1]] and [b for _, b in got_w] == [[2], [3], [4]]
        for a in learners + workers:
            ray.kill(a)
    finally:
        placement.remove()


@pytest.mark.ray
@pytest.mark.integration
def test_a_layout_the_cluster_cannot_hold_fails_with_what_it_asked(local_ray):
    with pytest.raises(RuntimeError, match="cannot place"):
        Placement(DistributedConfig(learners=1, learner_gpus=1, placement_timeout_s=2))
