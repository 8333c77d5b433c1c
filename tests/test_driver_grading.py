"""The Ray driver grades in a process pool (zerotir.distributed.grading): a hanging grader costs its
response, never the driver. No Ray actors: the grader alone, with a pool whose first call hangs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from zerotir import build  # noqa: E402
from zerotir.config import build_config  # noqa: E402
from zerotir.distributed.grading import DriverGrader  # noqa: E402
from zerotir.models import load_tokenizer  # noqa: E402
from zerotir.reward.pool import GradingPool  # noqa: E402
from zerotir.reward.verify import math_reward  # noqa: E402
from zerotir.types import Trajectory  # noqa: E402

pytestmark = pytest.mark.unit

MARKER = "ZEROTIR_TEST_HANG_MARKER"


def hang_once(response: str, answer: str, **options) -> float:
    """The first response graded while the marker file is absent hangs (like sympy in C code)."""
    marker = Path(os.environ[MARKER])
    if not marker.exists():
        marker.write_text("hung")
        time.sleep(3600)
    return math_reward(response, answer, **options)


def traj(tok, text: str, answer: str, excluded: bool = False) -> Trajectory:
    ids = tok.encode(text, add_special_tokens=False)
    return Trajectory([1], ids, [1] * len(ids), [0.0] * len(ids), text=text, answer=answer, excluded=excluded)


def test_a_hanging_grader_scores_zero_and_the_driver_goes_on(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(MARKER, str(tmp_path / "hung"))
    cfg = build_config("toy-zerotir")
    tok = load_tokenizer(cfg.model.path)
    task = build.make_task(cfg, tok)
    pool = GradingPool(1, timeout_s=0.3, grace_s=0.2, grade_fn=hang_once)
    grader = DriverGrader(cfg, task, pool=pool)
    try:
        trajs = [traj(tok, "So \\boxed{4}.", "4"), traj(tok, "It is \\boxed{4}.", "4"),
                 traj(tok, "So \\boxed{5}.", "4"), traj(tok, "So \\boxed{4}.", "4", excluded=True)]  # fmt: skip
        assert grader.score(trajs) == [0.0, 1.0, 0.0, 0.0]  # the first hung: killed, scored 0
        assert pool.stats.by_index == {0: "timeout"}
        assert grader.metrics()["distributed/grader_timeouts"] == 1.0
        assert grader.score(trajs) == [1.0, 1.0, 0.0, 0.0]  # the replacement grades as usual
    finally:
        grader.close()


def test_the_pool_grades_like_the_task_in_process():
    cfg = build_config("toy-zerotir")
    tok = load_tokenizer(cfg.model.path)
    task = build.make_task(cfg, tok)
    trajs = [traj(tok, "So \\boxed{4}.", "4"), traj(tok, "So \\boxed{\\frac{1}{2}}.", "0.5"),
             traj(tok, "no box", "4"), traj(tok, "So \\boxed{5}.", "4")]  # fmt: skip
    grader = DriverGrader(cfg, task)  # distributed.grader_processes=2 by default
    try:
        assert grader.pool is not None
        assert grader.score(trajs) == [task.score(t) for t in trajs]
        trajs[0].excluded = True  # a sandbox failure: not graded for training, graded for an evaluation
        assert grader.score(trajs)[0] == 0.0
        assert grader.score(trajs, grade_excluded=True) == [task.score(t) for t in trajs]
        trajs[0].excluded = False
    finally:
        grader.close()
    local = DriverGrader(build_config("toy-zerotir", overrides=["distributed.grader_processes=0"]), task)
    assert local.pool is None and local.score(trajs) == [task.score(t) for t in trajs]


def always_half(text: str, answer: str) -> float:
    return 0.5


def test_a_custom_reward_named_in_config_runs_in_the_pool_and_one_passed_as_an_object_in_process():
    cfg = build_config("toy-zerotir", overrides=["rollout.reward=test_driver_grading:always_half"])
    tok = load_tokenizer(cfg.model.path)
    grader = DriverGrader(cfg, build.make_task(cfg, tok))
    try:
        assert grader.pool is not None and grader.pool.grade_fn.__name__ == "call_reward"
        assert grader.score([traj(tok, "x", "4")]) == [0.5]
    finally:
        grader.close()
    obj = DriverGrader(cfg, build.make_task(cfg, tok, lambda t, a: 0.25), reward_fn=lambda t, a: 0.25)
    assert obj.pool is None and obj.score([traj(tok, "x", "4")]) == [0.25]

