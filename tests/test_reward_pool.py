"""The grading pool: stuck or dying graders are killed, reaped and replaced; the others score right.

The grade functions below are top-level so that spawned workers can import them by name. They stand
for graders stuck where no signal reaches (sympy inside C code): SIGALRM is ignored, so only the
parent's kill can end them.
"""

import os
import signal
import subprocess
import sys
import time
from multiprocessing import resource_tracker

import pytest

from zerotir.reward import GradingPool, grade_many, math_reward

B = "The answer is \\boxed{%s}."


def hang_or_grade(response, answer, **kw):
    if response == "HANG":
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    if response == "DIE":
        os.kill(os.getpid(), signal.SIGKILL)
    if response.startswith("SPAWN "):  # a grader that started a process of its own, then hung
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(response.split(" ", 1)[1], "w") as f:
            f.write(str(child.pid))
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    return math_reward(response, answer, **kw)


def raise_on_grade(response, answer, **kw):
    raise ArithmeticError("broken grader")


_BEFORE: set[int] = set()
"""Children this process had when the current test started (session fixtures' fork servers)."""


@pytest.fixture(autouse=True)
def _children_before():
    _BEFORE.clear()
    _BEFORE.update(pid for pid, _ in _children(all_=True))


def _children(all_: bool = False) -> list[tuple[int, str]]:
    """(pid, state) of this process's children that the current test started, zombies included, from
    /proc (multiprocessing's one shared resource tracker, which lives as long as this process, and a
    session-scoped sandbox pool started by an earlier test module, aside)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and int(d) != resource_tracker._resource_tracker._pid:
            if all_ or int(d) not in _BEFORE:
                out.append((int(d), fields[0]))
    return out


def _open_fds() -> int:
    resource_tracker.ensure_running()  # started once by the first spawn, with a pipe of its own
    return len(os.listdir("/proc/self/fd"))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(120)
def test_slow_response_does_not_zero_the_others():
    # A real answer that keeps sympy busy past the budget; before, the responses queued behind it on
    # the same worker scored 0 too.
    slow = B % "9^{9^{9}}"
    out = grade_many([slow, B % "1/2", B % "3"], ["1", "0.5", "3"], processes=1, timeout_s=1)
    assert out == [0.0, 1.0, 1.0]


@pytest.mark.timeout(120)
def test_stuck_and_dying_workers_are_killed_reaped_and_replaced():
    before = _open_fds()
    with GradingPool(2, timeout_s=1, grace_s=0.5, grade_fn=hang_or_grade) as pool:
        out = pool.grade(
            ["HANG", B % "1/2", "DIE", B % "3", "HANG", B % "4"], ["1", "0.5", "1", "3", "1", "5"]
        )
        assert out == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
        assert pool.stats.by_index == {0: "timeout", 2: "crash", 4: "timeout"}
        assert (pool.stats.timeouts, pool.stats.crashes, pool.stats.restarts) == (2, 1, 3)
        # still usable after the kills
        assert pool.grade([B % "2"], ["2"]) == [1.0]
    assert _children() == []  # no zombies, nothing left running
    assert _open_fds() <= before  # no leaked pipes


@pytest.mark.timeout(120)
def test_kill_takes_the_workers_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    with GradingPool(1, timeout_s=1, grace_s=0.5, grade_fn=hang_or_grade) as pool:
        assert pool.grade([f"SPAWN {pidfile}", B % "7"], ["1", "7"]) == [0.0, 1.0]
    grandchild = int(pidfile.read_text())
    for _ in range(50):  # SIGKILL is asynchronous: give the kernel a moment to take it down
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild)


@pytest.mark.timeout(300)
def test_soak_many_hangs_leave_nothing_behind():
    before = _open_fds()
    for _ in range(2):
        with GradingPool(2, timeout_s=0.5, grace_s=0.2, grade_fn=hang_or_grade) as pool:
            assert pool.grade(["HANG"] * 3 + [B % "1"], ["1"] * 4) == [0.0] * 3 + [1.0]
    assert _children() == []
    assert _open_fds() <= before


@pytest.mark.timeout(120)
def test_grader_error_is_raised_and_the_pool_cleaned_up():
    pool = GradingPool(1, grade_fn=raise_on_grade)
    with pytest.raises(RuntimeError, match="ArithmeticError: broken grader"):
        pool.grade([B % "1"], ["1"])
    assert _children() == []
    with pytest.raises(RuntimeError, match="closed"):
        pool.grade([B % "1"], ["1"])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="processes"):
        GradingPool(0)
    with pytest.raises(ValueError, match="2 responses but 1 answers"):
        grade_many(["a", "b"], ["1"])


@pytest.mark.timeout(120)
def test_worker_lost_while_idle_is_replaced_without_costing_a_response():
    with GradingPool(1) as pool:
        assert pool.grade([B % "1"], ["1"]) == [1.0]
        pid = pool._workers[0].process.pid
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):  # dead once it is a zombie (the pool reaps it)
            time.sleep(0.05)
        assert pool.grade([B % "2", B % "3"], ["2", "3"]) == [1.0, 1.0]
        assert pool.stats.by_index == {} and pool.stats.restarts == 1
    assert _children() == []
