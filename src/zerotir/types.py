"""Core records shared by rollout, reward, training and analysis."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ToolCall:
    """One executed code block. `status`: ok | error | timeout | killed | truncated."""

    code: str
    stdout: str = ""
    stderr: str = ""
    status: str = "ok"
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
    `old_logprobs` has one entry per response token (0.0 on injected ones).
    """

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    action_mask: list[int] = field(default_factory=list)
    old_logprobs: list[float] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "stop"
    """stop | length | max_tool_calls | sandbox_error."""
    reward: float | None = None
    correct: bool = False
    prompt_index: int = 0
    group_id: int = 0
    answer: str = ""
    meta: dict = field(default_factory=dict)
    excluded: bool = False
    """True when the trajectory must not be trained on (sandbox infrastructure failure, void turn)."""

    @property
    def model_tokens(self) -> int:
        return sum(self.action_mask)

    @property
    def executed_calls(self) -> int:
        return len(self.tool_calls)
