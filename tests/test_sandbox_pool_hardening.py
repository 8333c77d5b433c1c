"""The pool against requests that used to freeze or crash it, and stateful replay that must be
faithful. Each test reproduces a finding of issue 15 (pipe deadlock, no watchdog, unvalidated
timeouts, session poisoning, unfaithful or slow replay). Waits are bounded to detect a hang; none
asserts a speed."""

import concurrent.futures as cf
import os
import signal
import threading

import pytest

from zerotir.sandbox.base import LocalSandbox
from zerotir.sandbox.pool import ExecutorPool, PoolConfig, SandboxInfraError

HANG_S = 60  # far past anything these calls need: reaching it means the pool is frozen


def small_pool(**kw) -> ExecutorPool:
    """One light fork server (no heavy imports): starts in well under a second."""
    cfg = dict(workers=1, light_worker=False, numpy_worker=False, preimport=(), warmup="", slots_per_worker=4)
    return ExecutorPool(PoolConfig(**{**cfg, **kw}))


@pytest.fixture(scope="module")
def sandbox():
    sb = LocalSandbox(pool=small_pool())
    yield sb
    sb.close()


def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def test_large_requests_while_outputs_flow_do_not_deadlock():
    """~80 KB requests while ~60 KB results flow back: the pool used to write into the fork
    server's stdin while holding the lock its reader needs, while the server blocked writing
    results, and froze for good (submit itself never returned)."""
    pool = small_pool()
    code = "# " + "x" * 80_000 + "\nprint('y' * 60_000)"
    futs: list[cf.Future] = []
    submitted = threading.Event()

    def submit_all():
        with cf.ThreadPoolExecutor(8) as ex:
            futs.extend(ex.map(lambda _: pool.submit(code, 10), range(64)))
        submitted.set()

    threading.Thread(target=submit_all, daemon=True).start()
    try:
        assert submitted.wait(HANG_S), "submit blocked: the pool is deadlocked"
        done, not_done = cf.wait(futs, timeout=HANG_S)
        assert not not_done, f"{len(not_done)} calls never finished"
        assert all(f.result().stdout == "y" * 60_000 + "\n" for f in done)
    finally:
        pool.close()


def test_stopped_fork_server_fails_calls_then_is_replaced():
    """A fork server that stops answering (SIGSTOP, as a sibling without its own uid can send)
    used to hang every call on it forever; the watchdog kills it, fails its calls as
    infrastructure errors, and the next call runs on a fresh one."""
    pool = small_pool(watchdog_grace_s=1.0, watchdog_interval_s=0.2)
    try:
        assert pool.run("print(1)").stdout == "1\n"
        (pid,) = pool.worker_pids()
        for p in _descendants(pid):
            os.kill(p, signal.SIGSTOP)
        fut = pool.submit("print(2)", 2.0)
        with pytest.raises(SandboxInfraError, match="no result"):
            fut.result(timeout=HANG_S)
        assert pool.run("print(3)").stdout == "3\n"
        assert pool.worker_pids() != [pid]
    finally:
        pool.close()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0, "soon"])
def test_non_finite_or_non_positive_timeout_is_refused(sandbox, bad):
    """NaN or inf reached the fork server's epoll.poll and crashed it, failing every concurrent
    execution; now the caller gets a ValueError and nothing else is disturbed."""
    pool = sandbox.pool
    other = pool.submit("import time; time.sleep(0.3); print('fine')", 10)
    with pytest.raises(ValueError, match="timeout"):
        pool.submit("print(1)", bad)
    assert other.result(timeout=HANG_S).stdout == "fine\n"


@pytest.mark.parametrize("huge", [3e6, 1e12])
def test_huge_timeout_is_clamped(sandbox, huge):
    """A 3e6 s timeout overflowed the fork server's epoll.poll while the job ran and crashed it."""
    r = sandbox.pool.run("import time; time.sleep(0.3); print(1)", timeout_s=huge)
    assert (r.status, r.stdout) == ("ok", "1\n")


def test_replay_reproduces_the_randomness_of_the_original_block(sandbox):
    """A replayed block used to draw fresh random numbers, so its variables differed from what the
    model saw printed the first time."""
    block = "import random\nx = random.random()\nprint(x)"
    first = sandbox.run_batch_sync([block], 5, [[]])[0]
    later = sandbox.run_batch_sync(["print(x)"], 5, [[block]])[0]
    assert first.status == later.status == "ok"
    assert later.stdout == first.stdout
    # a stateless call still draws fresh numbers
    a, b = sandbox.run_batch_sync(["import random; print(random.random())"] * 2, 5)
    assert a.stdout != b.stdout


def test_os_exit_in_a_block_does_not_poison_the_session(sandbox):
    """`os._exit(0)` in a recorded block used to end every later call of the session during the
    replay: status ok, no output."""
    history = ["v = 7", "import os\nprint('bye', flush=True)\nos._exit(0)"]
    r = sandbox.run_batch_sync(["print(v * 6)"], 5, [history])[0]
    assert (r.status, r.stdout) == ("ok", "42\n")


def test_replayed_output_stays_hidden_even_at_descriptor_level(sandbox):
    history = [
        "import os, sys\nos.write(1, b'fd1 ')\nos.write(2, b'fd2 ')\nprint('p', file=sys.stderr)\nw = 1"
    ]
    r = sandbox.run_batch_sync(["print(w)"], 5, [history])[0]
    assert (r.stdout, r.stderr) == ("1\n", "")


def test_replay_time_does_not_count_against_the_new_block(sandbox):
    """The replayed blocks used to share the new block's timeout: a slow earlier block made every
    later call of the session time out."""
    history = ["import time\ntime.sleep(1.5)\nz = 3"]
    r = sandbox.run_batch_sync(["print(z)"], 1.0, [history])[0]
    assert (r.status, r.stdout) == ("ok", "3\n")


def test_fork_server_reads_a_huge_request_in_linear_time():
    """The fork server re-copied and re-scanned its whole input buffer on every 64 KB read: a
    96 MB request line took minutes of its single-threaded loop (32 MB: 11 s here). Split across
    reads as a pipe delivers it, it must come out whole, and long before a hang is declared."""
    from zerotir.sandbox._forkserver import _split_lines

    big = b"x" * (96 << 20)
    data = b'{"a": 1}\n\n' + big + b"\nlast"
    parts: list[bytes] = []
    lines: list[bytes] = []
    finished = threading.Event()

    def feed():
        for i in range(0, len(data), 1 << 16):
            lines.extend(_split_lines(parts, data[i : i + (1 << 16)]))
        finished.set()

    threading.Thread(target=feed, daemon=True).start()
    assert finished.wait(HANG_S), "reading the request did not finish: quadratic"
    assert lines == [b'{"a": 1}', b"", big] and parts == [b"last"]
