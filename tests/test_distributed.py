"""The Ray pipeline (zerotir.distributed) on a local Ray instance with the toy model.

Tiny on purpose (2 prompts x 4 samples, 64-token responses, 2-3 steps): the machine is small.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
