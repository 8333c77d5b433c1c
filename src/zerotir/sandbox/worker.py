"""One fork server as the pool sees it: the process, its pipes, and the calls in flight on it.

Three threads per fork server, none of which ever waits on another while blocked on a pipe: a
writer (the only one writing requests into the server's stdin, so a caller never blocks, even when
the pipe is full), a reader (results out of its stdout) and a stderr drain. The lock guards only
the table of calls in flight and is never held across a pipe operation: the server can be blocked
writing a result while the pool is blocked writing a request, and the reader still drains it.
A caller whose request fits in the pipe right away writes it itself (non-blocking, under a lock
that no thread holds across a blocking write), saving a thread hand-off per call; what does not
fit, and everything while the writer has work, goes through the writer thread, in order.
`check_stuck` (called by the pool's watchdog) kills a server that has calls in flight but has
answered nothing for longer than any of them may take; its calls fail as infrastructure errors and
the next request starts a fresh one.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import queue
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from zerotir.sandbox.isolation import FORKSERVER_ENV, forkserver_argv

log = logging.getLogger(__name__)


_FLUSH = object()  # writer-thread item: only finish a caller's partial write


class SandboxInfraError(RuntimeError):
    """The sandbox itself failed (not the user's code): retry, then drop the trajectory."""


@dataclass
class _Call:
    future: cf.Future
    budget_s: float
    """How long the server may take for this call once it runs (its timeout, replay, teardown)."""


class ForkServerProcess:
    def __init__(self, cfg, index: int, preimport: tuple[str, ...], warmup: str):
        self.cfg = cfg
        self.index = index
        self.preimport, self.warmup = preimport, warmup
        self.lock = threading.Lock()
        self._start_lock = threading.Lock()
        self.pending: dict[int, _Call] = {}
        self.queued = 0
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.isolation = "none"
        self.uid_base = 0  # set by the pool: its block of uids, or 0
        self.cgroup: str | None = None  # set by the pool: this server's memory cgroups, or None
        self.last_progress = time.monotonic()
        self._kill_reason: str | None = None
        self._closed = False
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        # Serialises writes into the server's stdin; callers only ever try it without blocking.
        self._wlock = threading.Lock()
        self._carry: tuple[subprocess.Popen, bytes] | None = None  # a caller's partial write: the
        # process and the rest, which the writer thread sends before anything else
        self._writer = threading.Thread(target=self._write_loop, daemon=True, name=f"fs{index}-writer")
        self._writer.start()

    # ------------------------------------------------------------ process
    def ensure_started(self) -> subprocess.Popen:
        with self._start_lock:
            proc = self.proc
            if proc is not None and proc.poll() is None:
                return proc
            return self._start()

    def _start(self) -> subprocess.Popen:
        argv, self.isolation, cgroup = forkserver_argv(self.cfg.isolation, self.cfg.tmp_size_mb, self.cgroup)
        c = self.cfg
        server_cfg = {
            "slots": c.slots_per_worker,
            "uid_base": self.uid_base,
            "memory_cgroup": cgroup,
            "max_processes": c.max_processes,
            "memory_mb": c.memory_mb,
            "max_file_bytes": c.max_file_bytes,
            "preimport": list(self.preimport),
            "warmup": self.warmup,
            "standby": c.standby,
            "huge_pages": c.huge_pages,
            "tmp_size_mb": c.tmp_size_mb,
            "seccomp": c.seccomp,
            "isolation": self.isolation,
        }
        proc = subprocess.Popen(
            argv + [json.dumps(server_cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=FORKSERVER_ENV,
        )
        deadline = time.monotonic() + c.start_timeout_s
        line = b""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line or proc.poll() is not None:
                break
        try:
            info = json.loads(line)
            assert info.get("ready")
        except Exception:
            err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
            proc.kill()
            raise SandboxInfraError(
                f"fork server failed to start ({self.isolation}): {line[:200]!r} {err[-2000:]}"
            ) from None
        self.info = info
        os.set_blocking(proc.stdin.fileno(), False)  # see _write_all and _write_now
        with self.lock:
            self.proc = proc
            self._kill_reason = None
        threading.Thread(target=self._read_loop, args=(proc,), daemon=True).start()
        threading.Thread(target=self._drain_stderr, args=(proc,), daemon=True).start()
        return proc

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            log.debug("forkserver %d: %s", self.index, line.decode(errors="replace").rstrip())

    # ------------------------------------------------------------ results
    def _read_loop(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self.lock:
                self.last_progress = time.monotonic()
                call = self.pending.pop(msg.get("id"), None)
            if call is not None and not call.future.done():
                call.future.set_result(msg)
        # EOF: the server died. Fail everything in flight as an infrastructure error.
        with self.lock:
            if self.proc is proc:
                self.proc = None
            stranded, self.pending = self.pending, {}
            why = self._kill_reason or f"exited (rc={proc.poll()})"
        for call in stranded.values():
            if not call.future.done():
                call.future.set_exception(SandboxInfraError(f"fork server {self.index} {why}"))

    # ------------------------------------------------------------ requests
    def submit(self, rid: int, data: bytes, fut: cf.Future, budget_s: float) -> None:
        """Send or queue one request line; never blocks (the writer thread starts the server if
        needed)."""
        call = _Call(fut, budget_s)
        if self._write_now(rid, data, call):
            return
        with self.lock:
            self.queued += 1
        self._outbox.put((rid, data, call))

    def _write_now(self, rid: int, data: bytes, call: _Call) -> bool:
        """Write the request from the caller's thread when the server runs and nothing is queued
        before it; a part that does not fit is left to the writer thread. False: queue it."""
        if not self._wlock.acquire(blocking=False):
            return False
        try:
            if self._carry or not self._outbox.empty() or self._closed:
                return False
            with self.lock:
                proc = self.proc
                if proc is None or proc.poll() is not None:
                    return False
                if not self.pending:
                    self.last_progress = time.monotonic()  # the watchdog counts from here
                self.pending[rid] = call
            try:
                n = os.write(proc.stdin.fileno(), data)
            except BlockingIOError:
                n = 0
            except (OSError, ValueError) as e:
                self._fail(rid, e)
                return True
            if n < len(data):
                self._carry = (proc, data[n:])
                self._outbox.put(_FLUSH)
            return True
        finally:
            self._wlock.release()

    def _fail(self, rid: int, e: Exception) -> None:
        with self.lock:
            lost = self.pending.pop(rid, None)
        if lost is not None and not lost.future.done():
            lost.future.set_exception(SandboxInfraError(f"fork server {self.index} pipe broken: {e}"))

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        """A blocking write on the non-blocking pipe: waits for room, never holds `lock`."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                select.select([], [fd], [], 1.0)

    def _write_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            with self._wlock:
                self._write_item(item)

    def _write_item(self, item) -> None:
        if self._carry is not None:  # a caller's partial write comes before anything else
            (proc, rest), self._carry = self._carry, None
            try:
                if proc is self.proc:  # never the start of a line into a restarted server
                    self._write_all(proc.stdin.fileno(), rest)
            except (OSError, ValueError):
                pass  # the server is gone: the reader fails its calls
        if item is _FLUSH:
            return
        rid, data, call = item
        if self._closed:
            with self.lock:
                self.queued -= 1
            call.future.set_exception(SandboxInfraError("executor pool is closed"))
            return
        try:
            proc = self.ensure_started()
        except Exception as e:  # noqa: BLE001 - fails this call, the next one retries the start
            with self.lock:
                self.queued -= 1
            call.future.set_exception(e if isinstance(e, SandboxInfraError) else SandboxInfraError(repr(e)))
            return
        with self.lock:
            self.queued -= 1
            alive = self.proc is proc
            if alive:
                if not self.pending:
                    self.last_progress = time.monotonic()  # the watchdog counts from here
                self.pending[rid] = call
        if not alive:
            call.future.set_exception(SandboxInfraError(f"fork server {self.index} exited"))
            return
        try:
            self._write_all(proc.stdin.fileno(), data)
        except (OSError, ValueError) as e:
            self._fail(rid, e)

    # ------------------------------------------------------------ health
    def check_stuck(self, grace_s: float, now: float | None = None) -> bool:
        """Kill the server if it has calls in flight but gave no result for longer than the longest
        of them may take plus `grace_s` (stopped, wedged or starved). True if it was killed."""
        now = time.monotonic() if now is None else now
        with self.lock:
            proc = self.proc
            if proc is None or not self.pending:
                return False
            silent = now - self.last_progress
            limit = max(c.budget_s for c in self.pending.values()) + grace_s
            if silent <= limit:
                return False
            self._kill_reason = f"gave no result for {silent:.0f} s (calls in flight): killed and replaced"
        log.warning("fork server %d %s", self.index, self._kill_reason)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session (start_new_session)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        return True

    @property
    def load(self) -> int:
        return len(self.pending) + self.queued

    def close(self) -> None:
        self._closed = True
        self._outbox.put(None)
        with self.lock:
            proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001
                proc.kill()
