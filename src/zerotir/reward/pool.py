"""A pool of grading processes that kills and replaces stuck workers.

Grading runs sympy on model-written answers, and sympy can be kept busy for minutes by a few
characters, sometimes inside C code that no signal interrupts. So each worker is a spawned process in
its own process group (so `killpg` takes anything it started too) that runs the grader in its own main
thread (math-verify's `signal.alarm` timeouts work there). The parent hands out one response at a
time over a pipe and waits with a deadline; a worker that misses it is killed with its group, joined
(no zombies), its pipe closed (no leaked descriptors) and replaced, and only its response scores 0.
A worker that dies (OOM, segfault) is handled the same way. No `Manager`, no executor threads: the
whole protocol is one pipe per worker and `multiprocessing.connection.wait`.

Workers die with the parent (`PR_SET_PDEATHSIG` on Linux, and EOF on their pipe elsewhere). Linux
sends that signal when the *thread* that started a worker ends, so create the pool, and call
`grade`, from a long-lived thread (the main thread); a worker lost while idle is replaced and its next
response graded by the new one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import connection, get_context
from typing import Any

from zerotir.reward.verify import math_reward

GradeFn = Callable[..., float]
"""`grade_fn(response, answer, **options) -> float`; a top-level function (it is pickled by name)."""


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(conn, grade_fn: GradeFn) -> None:
    """A worker: its own session and process group, math-verify imported before it says it is ready."""
    os.setsid()
    _die_with_parent()
    with contextlib.suppress(ImportError):
        import math_verify  # noqa: F401 - warm: the first response must not pay for the import
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        idx, response, answer, options = msg
        try:
            conn.send(("done", idx, float(grade_fn(response, answer, **options))))
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", idx, f"{type(e).__name__}: {e}"))


@dataclass
class _Worker:
    process: Any
    conn: Any
    started: float
    ready: bool = False
    task: int | None = None
    deadline: float = 0.0


@dataclass
class PoolStats:
    """Counts over the pool's life, for metrics (`reward/grader_timeouts`, ...)."""

    graded: int = 0
    timeouts: int = 0
    crashes: int = 0
    restarts: int = 0
    by_index: dict[int, str] = field(default_factory=dict)
    """Of the last `grade` call: index -> "timeout" | "crash" for responses that scored 0 that way."""


class GradingPool:
    """`processes` grading workers; `grade` scores a batch, each response within `timeout_s`.

    Use as a context manager (or call `close`): it kills and reaps every worker it started.

    Args:
        processes: number of worker processes.
        timeout_s: the budget of one response; the worker grades under it (math-verify's alarms) and is
            killed if it has not answered `grace_s` later.
        grade_fn: `grade_fn(response, answer, **options) -> float`, top-level (pickled by name).
        start_timeout_s: how long a new worker may take to import the grader before it is an error.
    """

    def __init__(
        self,
        processes: int,
        *,
        timeout_s: float = 10.0,
        grace_s: float = 2.0,
        grade_fn: GradeFn = math_reward,
        start_timeout_s: float = 120.0,
    ):
        if processes < 1:
            raise ValueError(f"GradingPool needs processes >= 1, got {processes}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.processes, self.timeout_s, self.grace_s = processes, timeout_s, grace_s
        self.grade_fn, self.start_timeout_s = grade_fn, start_timeout_s
        self.stats = PoolStats()
        self._ctx = get_context("spawn")  # the parent may hold threads (torch, engines): never fork it
        self._workers: list[_Worker] = [self._spawn() for _ in range(processes)]
        self._closed = False

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(target=_worker_main, args=(child, self.grade_fn), daemon=True)
        p.start()
        child.close()
        return _Worker(p, parent, time.monotonic())

    def _kill(self, w: _Worker) -> None:
        """SIGKILL the worker's process group (the worker alone if it has not left ours yet), reap it."""
        pid = w.process.pid
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                w.process.kill()
        except ProcessLookupError:
            pass
        w.process.join()
        w.conn.close()
        with contextlib.suppress(ValueError):
            w.process.close()

    def _replace(self, w: _Worker) -> None:
        self._kill(w)
        self._workers[self._workers.index(w)] = self._spawn()
        self.stats.restarts += 1

    def grade(self, responses: list[str], answers: list[str], **options: Any) -> list[float]:
        """Scores of `responses` against `answers`, in order; `options` go to `grade_fn` (the pool
        sets its `timeout_s`). A response that times out or kills its worker scores 0."""
        if self._closed:
            raise RuntimeError("GradingPool is closed")
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
        options = {"timeout_s": self.timeout_s, **options}
        scores: list[float | None] = [None] * len(responses)
        self.stats.by_index = {}
        todo = deque(range(len(responses)))
        lost_idle = 0
        try:
            while todo or any(w.task is not None for w in self._workers):
                for w in self._workers:
                    if w.ready and w.task is None and todo:
                        i = todo.popleft()
                        w.task, w.deadline = i, time.monotonic() + self.timeout_s + self.grace_s
                        try:
                            w.conn.send((i, responses[i], answers[i], options))
                        except OSError:  # the worker died while idle: not this response's doing
                            w.task = None
                            todo.appendleft(i)
                            lost_idle += 1
                            if lost_idle > 2 * self.processes:
                                raise RuntimeError(
                                    "grading workers keep dying before they get work"
                                ) from None
                            self._replace(w)
                self._wait(scores)
        except BaseException:
            self.close()
            raise
        self.stats.graded += len(responses)
        return [0.0 if s is None else s for s in scores]

    def _wait(self, scores: list[float | None]) -> None:
        now = time.monotonic()
        limits = [w.deadline if w.ready else w.started + self.start_timeout_s for w in self._workers]
        busy_or_starting = [w for w in self._workers if w.task is not None or not w.ready]
        if not busy_or_starting:
            return
        timeout = max(0.0, min(lim for w, lim in zip(self._workers, limits) if w in busy_or_starting) - now)
        for conn in connection.wait([w.conn for w in busy_or_starting], timeout):
            w = next(w for w in self._workers if w.conn is conn)
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                if not w.ready:
                    raise RuntimeError("a grading worker died while starting") from None
                self._fail(w, scores, "crash")
                continue
            if msg[0] == "ready":
                w.ready = True
            elif msg[0] == "done":
                scores[msg[1]] = msg[2]
                w.task = None
            else:
                raise RuntimeError(f"grade_fn raised on response {msg[1]}: {msg[2]}")
        now = time.monotonic()
        for w in list(self._workers):
            if w.task is not None and now > w.deadline:
                self._fail(w, scores, "timeout")
            elif not w.ready and now > w.started + self.start_timeout_s:
                raise RuntimeError(f"a grading worker did not start within {self.start_timeout_s} s")

    def _fail(self, w: _Worker, scores: list[float | None], why: str) -> None:
        if w.task is not None:
            scores[w.task] = 0.0
            self.stats.by_index[w.task] = why
        if why == "timeout":
            self.stats.timeouts += 1
        else:
            self.stats.crashes += 1
        self._replace(w)

    def close(self) -> None:
        """Stop every worker: idle ones are asked to exit, the rest are killed; all are reaped."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            if w.ready and w.task is None:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
        end = time.monotonic() + 2.0
        for w in self._workers:
            w.process.join(max(0.0, end - time.monotonic()))
            self._kill(w)
        self._workers = []

    def __enter__(self) -> GradingPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
