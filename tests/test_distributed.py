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


def test_async_bounded_staleness_with_partial_rollouts_and_tis(tmp_path: Path):
    from zerotir.distributed import train as dtrain

    ov = [*TINY, "trainer.total_steps=3", "distributed.enabled=true", "distributed.rollout_workers=2",
          "distributed.max_staleness=1", "distributed.off_policy=tis", "distributed.partial_rollouts=true",
          "distributed.chunk_tokens=16"]  # fmt: skip
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


def test_a_killed_rollout_worker_is_replaced_and_its_prompts_requeued(tmp_path: Path):
    from zerotir.distributed.driver import DistributedTrainer

    cfg = build_config("toy-zerotir", overrides=[*TINY, "distributed.enabled=true"])
    tr = DistributedTrainer(cfg, tmp_path)
    try:
        (pid,) = tr.engine.pids()

        def kill_when_busy():
            while not tr.engine.inflight:
                time.sleep(0.01)
            os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        m = tr.train_step()
        killer.join()
        assert m["distributed/worker_restarts"] == 1
        assert tr.engine.pids() != [pid]
        P, G = cfg.trainer.prompts_per_step, cfg.algo.group_size
        assert len(tr._used) == P * G and m["data/position"] == P  # nothing lost, nothing twice
        assert m["filter/groups_sampled"] == P and not tr.engine.inflight
        assert m["distributed/policy_version"] == 1
    finally:
        tr.close()


def test_cli_launch_on_local_ray_and_resume_after_a_lost_learner(tmp_path: Path):
    """`zerotir train ... distributed.enabled=true distributed.rollout_workers=2`; a run whose learner
    died continues from its newest checkpoint with `--resume` (the driver restarts every actor)."""
    from conftest import run_cli

    run = tmp_path / "run"
    ov = [o for o in TINY if not o.startswith("trainer.total_steps")]
    first = run_cli("train", "--preset", "toy-zerotir", "--run-dir", run, *ov, "trainer.total_steps=1",
                    "trainer.save_every=1", "distributed.enabled=true", "distributed.rollout_workers=2",
                    timeout=400)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    assert (run / "checkpoints" / "step_0000001").is_dir()
    again = run_cli("train", "--resume", run, "trainer.total_steps=2", timeout=400)
    assert again.returncode == 0, again.stderr[-2000:]
    rows = read_metrics(run)
    assert [r["data/position"] for r in rows] == [2, 4]  # the resumed step drew the next rows
    assert (run / "checkpoints" / "step_0000002").is_dir()


def test_a_dead_learner_stops_the_run_with_the_resume_command(tmp_path: Path):
    from zerotir.distributed.driver import DistributedTrainer, LearnerLost

    tr = DistributedTrainer(
        build_config("toy-zerotir", overrides=[*TINY, "distributed.enabled=true"]), tmp_path
    )
    try:
        os.kill(ray.get(tr.learner.actor.pid.remote()), signal.SIGKILL)
        with pytest.raises(LearnerLost, match="--resume"):
            tr.train_step()
    finally:
        tr.close()


def test_two_sharded_learners_colocated_with_two_workers_train_checkpoint_and_resume(
    tmp_path: Path, monkeypatch
):
    """`distributed.learners=2` (FSDP2 over gloo) with 2 rollout workers in the colocated layout: the
    actors sit in their bundles, the driver's grading pool survives a hanging grader, the sharded
    checkpoint (full state on rank 0) resumes."""
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
    tr = DistributedTrainer(
        build_config("toy-zerotir", overrides=[*ov, "trainer.total_steps=2"]), run, resume=True
    )
    try:
        assert tr.step == 1 and tr.learner.version == 1
        tr.fit()
    finally:
        tr.close()
    rows = read_metrics(run)
    assert [r["data/position"] for r in rows] == [2, 4]
    assert rows[-1]["distributed/policy_version"] == 2
