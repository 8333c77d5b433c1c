"""Held-out evaluation on a rollout worker (distributed/actors.py) grades in a pool of its own: Ray
calls the worker's methods from its threads, where signal-based grading timeouts do nothing."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from zerotir.config import build_config

pytestmark = pytest.mark.integration

MARKER = "ZEROTIR_TEST_EVAL_HANG_MARKER"


def hang_once_reward(text: str, answer: str) -> float:
    """A custom reward (`rollout.reward`) that hangs on its first call while the marker is absent,
    like sympy in C code on a pathological answer, and says 1 otherwise."""
    marker = Path(os.environ[MARKER])
    if not marker.exists():
        marker.write_text("hung")
        time.sleep(3600)
    return 1.0


def test_a_rollout_workers_evaluation_off_the_main_thread_survives_a_hanging_grader(tmp_path, monkeypatch):
    """Ray runs a RolloutWorker's methods in its threads (max_concurrency=4). There math-verify's
    signal-based timeouts do nothing, and held-out evaluation graded in-process: one answer that kept
    the grader busy held the whole evaluation, and the run with it. It grades in a pool now: the
    hung response scores 0 and the others are graded. No Ray here: the actor's class, called from a
    thread as Ray calls it; no tools, so no sandbox."""
    from zerotir.distributed.actors import RolloutWorker

    monkeypatch.setenv(MARKER, str(tmp_path / "hung"))
    cfg = build_config("toy-zerotir", overrides=[
        "rollout.reward=test_worker_eval:hang_once_reward", "rollout.grader_timeout_s=1",
        "distributed.grader_processes=1", "data.eval_size=6", "eval.batch_size=6",
        "rollout.max_response_len=24", "rollout.max_tool_calls=0", "log.progress=false",
    ])  # fmt: skip
    worker = RolloutWorker(cfg.model_dump(), 0, cfg.model.path)
    assert worker.sandbox is None
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(worker.evaluate()), daemon=True)
    try:
        t.start()
        t.join(120)
        assert not t.is_alive(), "the evaluation hung with its grader"
    finally:
        worker.close()
    assert (tmp_path / "hung").read_text() == "hung"  # the hang did happen
    assert out["eval/toy/accuracy"] == pytest.approx(5 / 6)  # that response 0, the other five graded
