"""The `Sandbox` protocol and the in-process implementation over the executor pool.

Both `LocalSandbox` (same pool, no server: the embedded default and tests) and `HttpSandbox`
(the client of `zerotir sandbox serve`) satisfy `Sandbox`; the rollout only sees the protocol.
Stateful mode ("replay"): each execution first re-runs the session's earlier successful blocks with
their output hidden, so a later block sees earlier variables while every call stays in a fresh
process (no live state to leak or to leave behind).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from typing import Protocol, runtime_checkable

from zerotir.sandbox.pool import ExecutorPool, PoolConfig, SandboxInfraError
from zerotir.types import ToolCall

__all__ = ["Sandbox", "LocalSandbox", "SandboxInfraError", "replay_setup"]


@runtime_checkable
class Sandbox(Protocol):
    async def run(self, code: str, timeout_s: float = 10.0, session: list[str] | None = None) -> ToolCall: ...

    async def run_batch(
        self, codes: list[str], timeout_s: float = 10.0, sessions: list[list[str] | None] | None = None
    ) -> list[ToolCall]: ...

    def run_batch_sync(
        self, codes: list[str], timeout_s: float = 10.0, sessions: list[list[str] | None] | None = None
    ) -> list[ToolCall | Exception]: ...

    def submit(self, code: str, timeout_s: float = 10.0, session: list[str] | None = None) -> cf.Future:
        """Start one execution from synchronous code; the future holds a `ToolCall`, or raises
        `SandboxInfraError`. Lets a rollout keep decoding while code runs."""
        ...

    def close(self) -> None: ...


def replay_setup(history: list[str] | None) -> str | None:
    """Earlier successful blocks of a trajectory, joined for replay (None if there are none)."""
    if not history:
        return None
    return "\n".join(history)


class LocalSandbox:
    """The executor pool used in-process."""

    def __init__(self, cfg: PoolConfig | None = None, pool: ExecutorPool | None = None):
        self.pool = pool or ExecutorPool(cfg or PoolConfig())

    @property
    def isolation(self) -> str:
        return self.pool.isolation

    async def run(self, code: str, timeout_s: float = 10.0, session: list[str] | None = None) -> ToolCall:
        return await asyncio.wrap_future(self.pool.submit(code, timeout_s, replay_setup(session)))

    async def run_batch(self, codes, timeout_s=10.0, sessions=None) -> list[ToolCall]:
        sessions = sessions or [None] * len(codes)
        futs = [
            asyncio.wrap_future(self.pool.submit(c, timeout_s, replay_setup(s)))
            for c, s in zip(codes, sessions)
        ]
        return list(await asyncio.gather(*futs))

    def submit(self, code: str, timeout_s: float = 10.0, session: list[str] | None = None) -> cf.Future:
        return self.pool.submit(code, timeout_s, replay_setup(session))

    def run_batch_sync(self, codes, timeout_s=10.0, sessions=None) -> list[ToolCall | Exception]:
        """Results in order; an infrastructure failure comes back as the exception, not raised."""
        sessions = sessions or [None] * len(codes)
        futs = [self.pool.submit(c, timeout_s, replay_setup(s)) for c, s in zip(codes, sessions)]
        out: list[ToolCall | Exception] = []
        for f in futs:
            try:
                out.append(f.result(timeout=timeout_s + 60))
            except Exception as e:  # noqa: BLE001 - surfaced to the caller as data
                out.append(e if isinstance(e, SandboxInfraError) else SandboxInfraError(repr(e)))
        return out

    def close(self) -> None:
        self.pool.close()
