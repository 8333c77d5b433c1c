"""The Ray pipeline (zerotir.distributed) on a local Ray instance with the toy model.

Tiny on purpose (2 prompts x 4 samples, 64-token responses, 2-3 steps): the machine is small.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from zerotir.config import build_config  # noqa: E402
from zerotir.logger import read_metrics  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.integration]

TINY = [
    "trainer.total_steps=2",
    "trainer.prompts_per_step=2",
    "algo.group_size=4",
    "rollout.max_response_len=64",
    "trainer.eval_every=0",
    "trainer.save_every=0",
    "log.progress=false",
    "log.tensorboard=false",
    "trainer.threads=1",
    "rollout.scheduler=rounds",  # the interactive scheduler resumes rows in sandbox-finish order (timing)
    "distributed.rollout_cpus=0",
    "distributed.learner_cpus=0",
]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


def nontime(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "tokens/"))} for r in rows]


def _step_killing_a_busy_worker(tr, pid: int) -> dict:
    """One train step during which worker `pid` is SIGKILLed as soon as it has work in flight."""

    def kill_when_busy():
        while not tr.engine.inflight:
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    m = tr.train_step()
    killer.join()
    return m


def test_sync_mode_matches_the_single_process_trainer(tmp_path: Path):
    from zerotir.distributed import train as dtrain
    from zerotir.train.trainer import train

    train(build_config("toy-zerotir", overrides=TINY), tmp_path / "local")
    dtrain(build_config("toy-zerotir", overrides=[*TINY, "distributed.enabled=true"]), tmp_path / "ray")
    local, dist = nontime(read_metrics(tmp_path / "local")), nontime(read_metrics(tmp_path / "ray"))
    assert len(local) == len(dist) == 2
    for a, b in zip(local, dist):
        extra = {k for k in b if k.startswith(("async/", "distributed/"))}
        assert set(b) - extra == set(a)
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k
    assert "train/mismatch_kl" in dist[0]
    assert dist[-1]["distributed/policy_version"] == 2


@pytest.mark.parametrize("transport", ["object_store", "collective"])
def test_async_bounded_staleness_with_partial_rollouts_and_tis(tmp_path: Path, transport: str):
    """Collective: broadcasts the driver does not wait for, received while rollouts run."""
    from zerotir.distributed import train as dtrain

    ov = [*TINY, "trainer.total_steps=3", "distributed.enabled=true", "distributed.rollout_workers=2",
          "distributed.max_staleness=1", "distributed.off_policy=tis", "distributed.partial_rollouts=true",
          "distributed.chunk_tokens=16", f"distributed.weight_transport={transport}"]  # fmt: skip
    dtrain(build_config("toy-zerotir", overrides=ov), tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["distributed/policy_version"] for r in rows] == [1, 2, 3]
    assert [r["data/position"] for r in rows] == [2, 4, 6]  # prefetched rows count once they are trained
    for r in rows:
        assert r["async/staleness_max"] <= 1
        assert sum(v for k, v in r.items() if k.startswith("async/token_share_lag/")) == pytest.approx(1.0)
        assert r["is/weight_min"] <= r["is/weight_mean"] <= r["is/weight_max"]
        assert "train/mismatch_kl" in r and r["time/learner_idle_s"] >= 0
    # step 1's rollouts were sampled by version 0 while the learner trained step 0
    assert rows[1]["async/staleness_share/1"] > 0


def test_a_killed_rollout_worker_is_replaced_and_its_prompts_requeued_but_a_dead_learner_stops_the_run(
    tmp_path: Path,
):
    """The object-store transport; the collective one's killed worker is in the broadcast test below.
    A dead learner, unlike a worker, is not replaced: the run stops and says how to resume. (One test:
    building a distributed trainer is what costs here.)"""
    from zerotir.distributed.driver import DistributedTrainer, LearnerLost

    ov = [*TINY, "distributed.enabled=true"]
    cfg = build_config("toy-zerotir", overrides=ov)
    tr = DistributedTrainer(cfg, tmp_path)
    try:
        (pid,) = tr.engine.pids()
        m = _step_killing_a_busy_worker(tr, pid)
        assert m["distributed/worker_restarts"] == 1
        assert tr.engine.pids() != [pid]
        P, G = cfg.trainer.prompts_per_step, cfg.algo.group_size
        assert len(tr._used) == P * G and m["data/position"] == P  # nothing lost, nothing twice
        assert m["filter/groups_sampled"] == P and not tr.engine.inflight
        assert m["distributed/policy_version"] == 1
        assert_workers_hold_the_learners_weights(tr, version=1)
        os.kill(ray.get(tr.learner.actor.pid.remote()), signal.SIGKILL)
        with pytest.raises(LearnerLost, match="--resume"):
            tr.train_step()
    finally:
        tr.close()


def _worker_weights(worker) -> tuple[int, dict]:
    def read(self):
        self._refresh()  # what the next job would load (no job runs now)
        return self.version, {k: v.detach().clone() for k, v in self.base_engine.model.state_dict().items()}

    return ray.get(worker.__ray_call__.remote(read))


def assert_workers_hold_the_learners_weights(tr, version: int) -> None:
    learner = ray.get([a.state_dict.remote() for a in tr.learner.actors])[0]  # sharded: a collective gather
    for w in tr.engine.workers:
        v, sd = _worker_weights(w)
        assert v == version
        assert set(sd) == set(learner)
        for k, t in learner.items():
            assert torch.equal(sd[k], t), k


def test_collective_transport_broadcasts_the_learners_weights_and_a_killed_worker_rejoins(tmp_path: Path):
    """`weight_transport=collective`, 2 workers, 1 learner: after each update both workers hold the
    learner's exact tensors at its version; a worker killed in step 2 (weights already broadcast
    once) is replaced, the group rebuilt and the newest weights resent before its jobs run."""
    from zerotir.distributed.driver import DistributedTrainer

    def _perturb(self) -> None:  # in the learner actor (nested: pickled by value, not by module)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in self.learner.policy.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 1e-3)

    ov = [*TINY, "distributed.enabled=true", "distributed.rollout_workers=2",
          "distributed.weight_transport=collective"]  # fmt: skip
    tr = DistributedTrainer(build_config("toy-zerotir", overrides=ov), tmp_path)
    try:
        assert tr.learner.state_dict().ref is None  # nothing goes through the object store
        _, before = _worker_weights(tr.engine.workers[0])
        ray.get(tr.learner.actor.__ray_call__.remote(_perturb))  # moved, so equal weights prove a broadcast
        m1 = tr.train_step()
        assert m1["distributed/policy_version"] == 1 and "train/mismatch_kl" in m1
        assert_workers_hold_the_learners_weights(tr, version=1)
        _, after = _worker_weights(tr.engine.workers[0])
        assert all(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
        pid = tr.engine.pids()[0]
        m2 = _step_killing_a_busy_worker(tr, pid)
        assert m2["distributed/worker_restarts"] == 1 and tr.engine.pids()[0] != pid
        assert m2["distributed/policy_version"] == 2 and m2["data/position"] == 4
        P, G = tr.cfg.trainer.prompts_per_step, tr.cfg.algo.group_size
        assert len(tr._used) == P * G and m2["filter/groups_sampled"] == P  # nothing lost, nothing twice
        assert not tr.engine.inflight
        # step 2 was sampled by version 1 on every worker, the replacement included (on-policy)
        assert {v for tr_ in tr._used for v, _ in tr_.meta["segments"]} == {1}
        assert tr.engine.collective.generation == 2
        assert_workers_hold_the_learners_weights(tr, version=2)
    finally:
        tr.close()


def test_cli_launch_on_local_ray_and_resume_after_a_lost_learner(tmp_path: Path):
    """`zerotir train ... distributed.enabled=true distributed.rollout_workers=2` with the collective
    weight transport; a run whose learner died continues from its newest checkpoint with `--resume`
    (the driver restarts every actor, and the resumed run keeps the run's transport). One test for
    both: each CLI launch starts a Ray instance of its own, the costliest thing in this file."""
    from conftest import run_cli

    run = tmp_path / "run"
    ov = [o for o in TINY if not o.startswith("trainer.total_steps")]
    first = run_cli("train", "--preset", "toy-zerotir", "--run-dir", run, *ov, "trainer.total_steps=1",
                    "trainer.save_every=1", "distributed.enabled=true", "distributed.rollout_workers=2",
                    "distributed.weight_transport=collective", timeout=400)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    assert (run / "checkpoints" / "step_0000001").is_dir()
    again = run_cli("train", "--resume", run, "trainer.total_steps=2", timeout=400)
    assert again.returncode == 0, again.stderr[-2000:]
    rows = read_metrics(run)
    assert [r["data/position"] for r in rows] == [2, 4]  # the resumed step drew the next rows
    assert [r["distributed/policy_version"] for r in rows] == [1, 2]
    assert all("train/mismatch_kl" in r for r in rows)
    assert (run / "checkpoints" / "step_0000002").is_dir()
    assert "weight_transport: collective" in (run / "config.yaml").read_text()


def test_two_sharded_learners_colocated_with_two_workers_train_checkpoint_and_resume(
    tmp_path: Path, monkeypatch
):
    """`distributed.learners=2` (FSDP2 over gloo) with 2 rollout workers in the colocated layout: the
    actors sit in their bundles, the driver's grading pool survives a hanging grader, the sharded
    checkpoint (full state on rank 0) resumes, with the collective weight transport."""
    from test_driver_grading import MARKER, hang_once
    from zerotir.distributed.driver import DistributedTrainer
    from zerotir.distributed.grading import DriverGrader
    from zerotir.distributed.placement import where
    from zerotir.reward.pool import GradingPool

    monkeypatch.setenv(MARKER, str(tmp_path / "hung"))
    ov = [o for o in TINY if not o.startswith(("trainer.total_steps", "trainer.save_every"))]
    ov += ["distributed.enabled=true", "distributed.learners=2", "distributed.rollout_workers=2",
           "distributed.layout=colocated", "trainer.save_every=1"]  # fmt: skip
    run = tmp_path / "run"
    tr = DistributedTrainer(build_config("toy-zerotir", overrides=[*ov, "trainer.total_steps=1"]), run)
    try:
        pg = tr.placement.group.id.hex()
        assert [where(a) for a in tr.learner.actors] == [(pg, [0]), (pg, [1])]
        assert [where(w) for w in tr.engine.workers] == [(pg, [0]), (pg, [1])]
        tr.grader.close()
        tr.grader = DriverGrader(
            tr.cfg, tr.task, pool=GradingPool(1, timeout_s=0.3, grace_s=0.2, grade_fn=hang_once)
        )
        tr.fit()
    finally:
        tr.close()
    (row,) = read_metrics(run)
    assert row["distributed/grader_timeouts"] == 1 and row["distributed/policy_version"] == 1
    assert (run / "checkpoints" / "step_0000001" / "policy" / "config.json").is_file()
    # resumed with the collective transport: rank 0 of the FSDP group gathers the full weights and
    # broadcasts them over the (separate) weight group
    ov += ["distributed.weight_transport=collective"]
    tr = DistributedTrainer(
        build_config("toy-zerotir", overrides=[*ov, "trainer.total_steps=2"]), run, resume=True
    )
    try:
        assert tr.step == 1 and tr.learner.version == 1
        tr.fit()
        assert_workers_hold_the_learners_weights(tr, version=2)
    finally:
        tr.close()
    rows = read_metrics(run)
    assert [r["data/position"] for r in rows] == [2, 4]
    assert rows[-1]["distributed/policy_version"] == 2
