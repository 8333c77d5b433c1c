"""Core records shared by rollout, reward, training and analysis.

Statuses and finish reasons are `StrEnum`s: they compare equal to their strings, so JSON, logs and
older code that writes "stop" or "timeout" keep working, while typos in new code fail at import.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return str(self.value)


class ToolStatus(StrEnum):
    """How one execution ended."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    KILLED = "killed"
    TRUNCATED = "truncated"


class FinishReason(StrEnum):
    """Why a trajectory ended."""

    STOP = "stop"
    """EOS or a template stop string, with tool calls left."""
    LENGTH = "length"
    """The response budget (model + injected tokens) is spent."""
    MAX_TOOL_CALLS = "max_tool_calls"
    """Ended after the tool-call cap was reached."""
    SANDBOX_ERROR = "sandbox_error"
    """The sandbox failed (infrastructure, not the model's code): excluded from the loss."""


class CompletionReason(StrEnum):
    """Why one engine call ended."""

    EOS = "eos"
    STOP = "stop"
    LENGTH = "length"


@dataclass
class ToolCall:
    """One executed code block. `status`: a `ToolStatus` (ok | error | timeout | killed | truncated)."""

    code: str
    stdout: str = ""
    stderr: str = ""
    status: str = ToolStatus.OK
    seconds: float = 0.0
    exit_code: int = 0
    output: str = ""
    """The observation text that was injected (after formatting and truncation)."""

    @classmethod
    def from_result(cls, code: str, r: dict) -> ToolCall:
        """From an execution result as the fork server and the HTTP API report it."""
        return cls(
            code=code,
            stdout=r["stdout"],
            stderr=r["stderr"],
            status=r["status"],
            seconds=r["seconds"],
            exit_code=r["exit_code"],
        )


@dataclass
class Trajectory:
    """One sampled response to one prompt, token-exact.

    `response_ids` holds model tokens and injected tool-output tokens in order; `action_mask` is 1
    where the model sampled the token (trained) and 0 where the environment injected it.
    `rollout_logprobs` has one entry per response token (0.0 on injected ones): the behaviour
    policy's logprobs *as the engine returned them*. The trainer's recomputation is a separate
    tensor (`TokenBatch.recomputed_logprobs`), never written back here.
    """

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    action_mask: list[int] = field(default_factory=list)
    rollout_logprobs: list[float] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    text: str = ""
    finish_reason: str = FinishReason.STOP
    """A `FinishReason`: stop | length | max_tool_calls | sandbox_error."""
    reward: float | None = None
    correct: bool = False
    prompt_index: int = 0
    group_id: int = 0
    answer: str = ""
    meta: dict = field(default_factory=dict)
    excluded: bool = False
    """True when the trajectory must not be trained on (sandbox infrastructure failure, void turn)."""

    @property
    def old_logprobs(self) -> list[float]:
        """The earlier name of `rollout_logprobs` (the same list)."""
        return self.rollout_logprobs

    @old_logprobs.setter
    def old_logprobs(self, value: list[float]) -> None:
        self.rollout_logprobs = value

    @property
    def model_tokens(self) -> int:
        return sum(self.action_mask)

    @property
    def executed_calls(self) -> int:
        return len(self.tool_calls)
