"""The `Sandbox` protocol and the in-process implementation over the executor pool.

Both `LocalSandbox` (same pool, no server: the embedded default and tests) and `HttpSandbox`
(the client of `zerotir sandbox serve`) satisfy `Sandbox`; the rollout only sees the protocol.
Stateful mode: a call carries its session, the earlier successful blocks of the trajectory; they
are replayed before the new block (output hidden, randomness re-seeded as when they first ran, see
`prelude`), so a later block sees earlier variables while every call stays in a fresh process (no
live state to leak or to leave behind).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from zerotir.sandbox.pool import ExecutorPool, PoolConfig, SandboxInfraError
from zerotir.sandbox.types import ExecRequest
from zerotir.types import ToolCall

__all__ = ["Sandbox", "LocalSandbox", "SandboxInfraError", "as_request"]

Session = Sequence[str] | None
"""The earlier successful blocks of a stateful trajectory ([] for its first block); None: stateless."""


@runtime_checkable
class Sandbox(Protocol):
    """What the rollout uses: one call at a time from synchronous code, a batch, and shutdown."""

    def submit(self, code: str, timeout_s: float = 10.0, session: Session = None) -> cf.Future:
        """Start one execution; the future holds a `ToolCall`, or raises `SandboxInfraError`.
        Lets a rollout keep decoding while code runs."""
        ...

    def run_batch_sync(
        self, codes: list[str], timeout_s: float = 10.0, sessions: list[Session] | None = None
    ) -> list[ToolCall | Exception]:
        """Results in order; an infrastructure failure comes back as the exception, not raised."""
        ...

    def close(self) -> None: ...


def as_request(code: str, timeout_s: float, session: Session) -> ExecRequest:
    return ExecRequest(code, timeout_s, replay=None if session is None else tuple(session))


class LocalSandbox:
    """The executor pool used in-process."""

    def __init__(self, cfg: PoolConfig | ExecutorPool | None = None, pool: ExecutorPool | None = None):
        if isinstance(cfg, ExecutorPool):
            cfg, pool = None, cfg
        self.pool = pool or ExecutorPool(cfg or PoolConfig())

    @property
    def isolation(self) -> str:
        return self.pool.isolation

    def submit(self, code: str, timeout_s: float = 10.0, session: Session = None) -> cf.Future:
        return self.pool.submit_request(as_request(code, timeout_s, session))

    async def run(self, code: str, timeout_s: float = 10.0, session: Session = None) -> ToolCall:
        return await asyncio.wrap_future(self.submit(code, timeout_s, session))

    async def run_batch(self, codes, timeout_s=10.0, sessions=None) -> list[ToolCall]:
        sessions = sessions or [None] * len(codes)
        return list(await asyncio.gather(*(self.run(c, timeout_s, s) for c, s in zip(codes, sessions))))

    def run_batch_sync(self, codes, timeout_s=10.0, sessions=None) -> list[ToolCall | Exception]:
        sessions = sessions or [None] * len(codes)
        futs = [self.submit(c, timeout_s, s) for c, s in zip(codes, sessions)]
        out: list[ToolCall | Exception] = []
        for f in futs:
            try:
                out.append(f.result(timeout=self.pool.wait_bound_s(timeout_s)))
            except Exception as e:  # noqa: BLE001 - surfaced to the caller as data
                out.append(e if isinstance(e, SandboxInfraError) else SandboxInfraError(repr(e)))
        return out

    def close(self) -> None:
        self.pool.close()
