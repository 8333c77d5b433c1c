"""Typed records shared by the pool, the HTTP server and the HTTP client.

`ExecRequest` is one execution as callers describe it, `ExecResult` one result as the fork server
and the HTTP API report it, `ExecStatus` its verdict. They are plain data: no I/O, no pool. The
fork server (a standalone script inside the sandbox) cannot import them and speaks the same fields
as JSON; `ExecResult.from_wire` is where that JSON becomes typed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

try:
    from enum import StrEnum
except ImportError:  # Python 3.10

    class StrEnum(str, Enum):  # type: ignore[no-redef]
        def __str__(self) -> str:
            return self.value


from zerotir.types import ToolCall

__all__ = ["ExecStatus", "ExecRequest", "ExecResult", "check_timeout"]


class ExecStatus(StrEnum):
    """Verdict of one execution; the values are the strings the API has always reported."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    KILLED = "killed"
    """Killed by a signal: memory or CPU limit, or the code killed itself."""
    TRUNCATED = "truncated"
    """Ran fine but printed more than the output cap; the tail was kept."""


def check_timeout(timeout_s: float, max_timeout_s: float) -> float:
    """A finite, positive timeout clamped to `max_timeout_s`; NaN, infinities and values <= 0 raise
    ValueError (the fork server's poll loop must never see them)."""
    try:
        t = float(timeout_s)
    except (TypeError, ValueError):
        raise ValueError(f"timeout must be a number, got {timeout_s!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout_s!r}")
    return min(t, max_timeout_s)


@dataclass(frozen=True)
class ExecRequest:
    """One execution. `replay` are a session's earlier blocks, re-run (output hidden, randomness
    re-seeded as when they first ran) before `code`; `stdin` is what `input()`/`sys.stdin` read;
    `files` are written into the execution's working directory before anything runs."""

    code: str
    timeout_s: float = 10.0
    replay: tuple[str, ...] | None = None
    """None: a stateless call. A tuple (even empty): a stateful one, seeded so it can be replayed."""
    memory_mb: int | None = None
    stdin: str | None = None
    files: tuple[tuple[str, bytes], ...] = field(default=())


@dataclass(frozen=True)
class ExecResult:
    """One result, as the fork server emits it and `/run` answers it."""

    status: ExecStatus
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    seconds: float = 0.0

    @classmethod
    def from_wire(cls, r: dict) -> ExecResult:
        return cls(
            status=ExecStatus(r["status"]),
            stdout=r["stdout"],
            stderr=r["stderr"],
            exit_code=int(r["exit_code"]),
            seconds=float(r["seconds"]),
        )

    def to_wire(self) -> dict:
        return {
            "status": str(self.status),
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_code": self.exit_code,
            "seconds": self.seconds,
        }

    def tool_call(self, code: str) -> ToolCall:
        return ToolCall(
            code=code,
            stdout=self.stdout,
            stderr=self.stderr,
            status=self.status,
            seconds=self.seconds,
            exit_code=self.exit_code,
        )
