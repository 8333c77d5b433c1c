"""The executor pool: warm fork servers (each inside one sandbox) and the futures that wait on them.

Thread-based rather than asyncio so that the same pool serves a synchronous trainer, the async HTTP
server and async clients (`asyncio.wrap_future`). `submit` never blocks: it validates the request
and queues it for the fork server's writer thread (see `worker`). A fork server that dies, or that
the watchdog finds silent past every deadline of its calls, fails its in-flight requests with
`SandboxInfraError` (never a fake "error" observation) and is restarted on next use.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import os
import re
import threading
from dataclasses import dataclass

from zerotir.sandbox.isolation import MemoryCgroups, UidBlock
from zerotir.sandbox.prelude import build_prelude
from zerotir.sandbox.types import ExecRequest, ExecResult, check_timeout
from zerotir.sandbox.worker import ForkServerProcess, SandboxInfraError
from zerotir.types import ToolCall

__all__ = ["ExecutorPool", "PoolConfig", "SandboxInfraError"]

STDLIB_PREIMPORT = (
    "math",
    "fractions",
    "itertools",
    "functools",
    "collections",
    "decimal",
    "statistics",
    "cmath",
)


NUMPY_WARMUP = (
    "import numpy as _np\n_a = _np.arange(16.0).reshape(4, 4); _np.linalg.solve(_a + _np.eye(4) * 9, _np.ones(4))\n"
    "_np.fft.fft(_np.ones(8)); _np.random.default_rng(0).normal(size=3); (_a.astype(int) @ _a.astype(int).T).trace()\n"
)


# Typical math-code idioms with the symbol names models use most. Besides lazy imports and one-time
# set-up (solvers, simplification, polys domains), this leaves sympy's caches holding the common
# symbols and their small expressions, which every child then finds ready: measured here, 12-16%
# less time per sympy execution on snippets that appear nowhere in this text.
SYMPY_WARMUP = """
from sympy import *
x, y, z, n, k, a, b, c, t = symbols('x y z n k a b c t')
solve(x**2 + 3*x - 4, x); solve(Eq(2*x + 3, 11), x); solve([x + y - 5, x - y - 1], [x, y])
simplify(sin(x)**4 - cos(x)**4); simplify((x**2 - 1)/(x - 1)); trigsimp(sin(y)**2 + cos(y)**2)
simplify(tan(x)*cos(x)); expand((x + y)**4); factor(x**4 - 16); diff(sin(x)*exp(x), x)
integrate(x**3, (x, 0, 2)); summation(k**2, (k, 1, n)); limit(sin(x)/x, x, 0); Rational(2, 3) * sqrt(12)
w = Symbol('w'); simplify(tan(w)**2 + 1); factor(w**3 - 1); integrate(w**2, (w, 0, 3)); nsimplify(0.375)
Matrix([[1, 2], [3, 5]]).det(); N(pi, 20); isprime(97); binomial(10, 3); factorint(360)
"""


@dataclass(frozen=True)
class PoolConfig:
    workers: int = 1
    """Fork-server processes, each in its own sandbox."""
    slots_per_worker: int = 8
    """Concurrent executions per fork server; more requests queue inside it."""
    isolation: str = "auto"
    """bwrap | auto | none."""
    memory_mb: int = 1024
    """Address-space allowance per execution, on top of the pre-imported heap."""
    max_processes: int = 32
    """RLIMIT_NPROC per execution slot (enforced through a per-slot uid when running as root)."""
    max_output_bytes: int = 65536
    """Captured tail of stdout and of stderr."""
    max_file_bytes: int = 16 << 20
    tmp_size_mb: int = 256
    preimport: tuple[str, ...] = (*STDLIB_PREIMPORT, "numpy", "sympy")
    warmup: str = NUMPY_WARMUP + SYMPY_WARMUP
    """Run once in each fork server before forking, so children start with warm library internals."""
    light_worker: bool = True
    """Route code that imports no heavy library to an extra small fork server (lower latency)."""
    numpy_worker: bool = True
    """Route code that uses numpy but no other heavy library to an extra numpy-only fork server:
    forking and tearing down a process without sympy mapped costs ~1.5 ms instead of ~7."""
    standby: int = 1
    """Children each fork server keeps forked ahead of requests, already confined (0: fork on
    arrival); each has a slot uid (and memory cgroup) of its own, on top of the running slots'."""
    huge_pages: bool = True
    """Back each fork server's imported heap with 2 MiB pages where the kernel allows (Linux 6.1+):
    fewer page-table entries to copy per fork (5 -> 2 ms for a fresh numpy+sympy server here)."""
    uid_base: int = 61000
    """Where the search for a free block of slot uids starts when running as root (each pool
    reserves its own block, see isolation.UidBlock); 0: no per-slot uids."""
    memory_cgroup: bool = False
    """Bound all processes of one execution together by a memory cgroup per slot (cgroup v1 memory
    controller, root only; see isolation.MemoryCgroups). Off by default: charging pages to a fresh
    memcg made a sympy execution ~13 ms (40%) slower here; without it each process is bounded alone."""
    seccomp: bool = False
    """Install a seccomp filter in each execution (new namespaces, mounts, ptrace, keyrings, bpf,
    perf, userfaultfd, io_uring, modules answer EPERM; see sandbox/_seccomp.py; x86_64, aarch64).
    Off by default: measured here, a `print` call took 5.2 instead of 2.7 ms p50 and `print`
    throughput at 16 concurrent calls fell ~20% (the kernel compiles and frees a filter per process)."""
    start_timeout_s: float = 120.0
    """Seconds a fork server may take to import and warm up before it counts as failed."""
    max_timeout_s: float = 300.0
    """Longest per-execution timeout accepted; longer ones are clamped (NaN, inf, <= 0 refused)."""
    replay_timeout_s: float = 10.0
    """Extra seconds a stateful call gets to replay its session's earlier blocks, so that the
    replay does not eat into the new block's own timeout."""
    watchdog_grace_s: float = 30.0
    """A fork server with calls in flight that answers nothing for longer than their longest
    timeout plus this is killed and replaced; its calls fail as infrastructure errors."""
    watchdog_interval_s: float = 1.0
    """How often the watchdog looks."""


LIGHT_PREIMPORT = (*STDLIB_PREIMPORT, "random", "re", "locale")
NUMPY_PREIMPORT = (*STDLIB_PREIMPORT, "numpy")
LIGHT_WARMUP = "open('/dev/null', 'w').close()\n"  # initialises the text-I/O machinery children use for print
_NON_NUMPY_LIBS = "sympy|scipy|mpmath|pandas|matplotlib|networkx"
HEAVY_CODE = re.compile(rf"\b(numpy|{_NON_NUMPY_LIBS})\b")
NON_NUMPY_HEAVY = re.compile(rf"\b({_NON_NUMPY_LIBS})\b")


class ExecutorPool:
    """A set of warm fork servers. `submit` returns a future of a `ToolCall`."""

    def __init__(self, cfg: PoolConfig | None = None, *, eager: bool = True):
        self.cfg = cfg or PoolConfig()
        c = self.cfg
        self.servers = [ForkServerProcess(c, i, c.preimport, c.warmup) for i in range(c.workers)]
        # Code that imports no heavy library goes to a small fork server, numpy-only code to a numpy
        # one: forking (and tearing down) a process costs with what it has mapped (print: ~1 ms
        # light, ~7 ms with numpy and sympy).
        self.light = (
            [ForkServerProcess(c, c.workers, LIGHT_PREIMPORT, LIGHT_WARMUP)] if c.light_worker else []
        )
        self.numpy = (
            [ForkServerProcess(c, c.workers + 1, NUMPY_PREIMPORT, NUMPY_WARMUP)] if c.numpy_worker else []
        )
        self.all_servers = self.servers + self.light + self.numpy
        # The pool's own uids (never another pool's) and memory cgroups, one per execution slot.
        per_server = c.slots_per_worker + c.standby  # standby children hold slot ids of their own
        n_slots = per_server * len(self.all_servers)
        self._uids = UidBlock(c.uid_base, n_slots) if c.uid_base and os.geteuid() == 0 else None
        name = f"{self._uids.base}" if self._uids else f"pid{os.getpid()}-{id(self):x}"
        self._cgroups = MemoryCgroups(name, len(self.all_servers), per_server, enabled=c.memory_cgroup)
        for s in self.all_servers:
            s.uid_base = self._uids.base + s.index * per_server if self._uids else 0
            s.cgroup = self._cgroups.server_dir(s.index)
        self._ids = itertools.count(1)
        self._closed = threading.Event()
        try:
            if eager:
                for s in self.all_servers:
                    s.ensure_started()
        except BaseException:
            self.close()
            raise
        self._watchdog = threading.Thread(target=self._watch, daemon=True, name="sandbox-watchdog")
        self._watchdog.start()

    @property
    def isolation(self) -> str:
        return self.servers[0].isolation

    @property
    def in_flight(self) -> int:
        return sum(s.load for s in self.all_servers)

    def worker_pids(self) -> list[int]:
        return [s.proc.pid for s in self.all_servers if s.proc is not None]

    def _watch(self) -> None:
        while not self._closed.wait(self.cfg.watchdog_interval_s):
            for s in self.all_servers:
                s.check_stuck(self.cfg.watchdog_grace_s)

    def submit(
        self, code: str, timeout_s: float = 10.0, setup: str | None = None, memory_mb: int | None = None
    ) -> cf.Future:
        """`submit_request` for the common case; `setup` is one earlier block to replay."""
        replay = (setup,) if setup else None
        return self.submit_request(ExecRequest(code, timeout_s, replay=replay, memory_mb=memory_mb))

    def submit_request(self, req: ExecRequest) -> cf.Future:
        """Queue one execution; the future holds a `ToolCall` or raises `SandboxInfraError`.

        Raises ValueError at once for a request the pool refuses (a timeout that is not a finite
        positive number, a file name outside the working directory)."""
        if self._closed.is_set():
            raise SandboxInfraError("executor pool is closed")
        c = self.cfg
        timeout = check_timeout(req.timeout_s, c.max_timeout_s)
        if req.replay:
            timeout += c.replay_timeout_s
        setup = build_prelude(req)
        rid = next(self._ids)
        wire: dict = {"id": rid, "code": req.code, "timeout": timeout, "max_output_bytes": c.max_output_bytes}
        if setup:
            wire["setup"] = setup
        if req.memory_mb and req.memory_mb > 0:
            wire["memory_mb"] = min(int(req.memory_mb), c.memory_mb)  # a request may lower, never raise
        server = min(self.servers_for(req.code, req.replay), key=lambda s: s.load)
        raw: cf.Future = cf.Future()
        out: cf.Future = cf.Future()
        code = req.code

        def _done(f: cf.Future) -> None:
            exc = f.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            try:
                out.set_result(ExecResult.from_wire(f.result()).tool_call(code))
            except (KeyError, ValueError, TypeError) as e:
                out.set_exception(SandboxInfraError(f"malformed result from fork server: {e!r}"))

        raw.add_done_callback(_done)
        # Time on top of the timeout: process teardown, output drain, cleanup of its files.
        server.submit(rid, (json.dumps(wire) + "\n").encode(), raw, timeout + 2.0)
        return out

    def servers_for(self, code: str, replay: tuple[str, ...] | str | None = None) -> list[ForkServerProcess]:
        """The fork servers that run this code: the smallest whose imports cover the libraries it
        names (a replayed earlier block counts)."""
        if isinstance(replay, str):
            replay = (replay,)
        text = "\n".join((*(replay or ()), code))
        if self.light and not HEAVY_CODE.search(text):
            return self.light
        if self.numpy and not NON_NUMPY_HEAVY.search(text):
            return self.numpy
        return self.servers

    def wait_bound_s(self, timeout_s: float, n: int = 1) -> float:
        """How long a caller may wait for n executions of this timeout before giving up on them
        (the watchdog fails a stuck call well before)."""
        t = check_timeout(timeout_s, self.cfg.max_timeout_s) + self.cfg.replay_timeout_s
        return t * n + self.cfg.watchdog_grace_s + 30

    def run(self, code: str, timeout_s: float = 10.0, setup: str | None = None) -> ToolCall:
        return self.submit(code, timeout_s, setup).result(timeout=self.wait_bound_s(timeout_s))

    def run_batch(self, codes: list[str], timeout_s: float = 10.0) -> list[ToolCall]:
        futs = [self.submit(c, timeout_s) for c in codes]
        return [f.result(timeout=self.wait_bound_s(timeout_s, len(codes))) for f in futs]

    def close(self) -> None:
        self._closed.set()
        for s in self.all_servers:
            s.close()
        self._cgroups.close()
        if self._uids is not None:
            self._uids.release()

    def __enter__(self) -> ExecutorPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
