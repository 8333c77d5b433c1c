"""The `Tool` seam: everything the tool loop needs to know about one kind of tool call.

The loop (tool_loop.py) knows turns, budgets and token bookkeeping; a `Tool` knows its fences (the
stop strings that open and close a call), how a call is parsed from the model's text, how it is
executed (through the sandbox), and how its result is shown to the model (formatted, capped, with
notices). `PythonTool` is ZeroTIR's ```python / ```output protocol (rollout/protocol.py).
"""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from zerotir.reward import strip_output_blocks
from zerotir.rollout.protocol import (
    CODE_CLOSE,
    CODE_OPEN,
    EXHAUSTED_NOTICE,
    TOO_LONG_NOTICE,
    extract_last_code,
    format_output,
    wrap_output,
)
from zerotir.types import ToolCall


@runtime_checkable
class Tool(Protocol):
    """One tool the model calls by writing `open` ... `close` in its response."""

    @property
    def open(self) -> str:
        """Stop string that starts a call (the loop then waits for `close`)."""
        ...

    @property
    def close(self) -> str:
        """Stop string that ends a call (the loop then executes it)."""
        ...

    def parse_call(self, text: str) -> str | None:
        """The call the response just closed (its last complete one), or None."""
        ...

    def submit(self, sandbox: Any, call: str, timeout_s: float, session: list[str] | None) -> cf.Future:
        """Start one execution; the future holds a `ToolCall` or raises an infrastructure error."""
        ...

    def run_batch(
        self, sandbox: Any, calls: list[str], timeout_s: float, sessions: list[list[str] | None]
    ) -> list[ToolCall | Exception]:
        """Execute calls together; infrastructure failures come back as exceptions, in order."""
        ...

    def observation_ids(self, tokenizer: Any, result: ToolCall, exhausted: bool) -> list[int]:
        """Token ids injected after a call (sets `result.output` to the shown text)."""
        ...

    def strip_observations(self, text: str) -> str:
        """`text` without the injected observations (for rewards that must ignore printed answers)."""
        ...


@dataclass(frozen=True)
class PythonTool:
    """```python blocks run in the sandbox; the result comes back as an ```output block.

    Long outputs (> `output_max_tokens`) are replaced by a notice (`overflow=replace`, the paper's code)
    or keep their tail (`truncate`); tracebacks keep their last `error_lines` lines; after the last
    allowed call a notice says the tool is exhausted."""

    output_max_tokens: int = 256
    overflow: str = "replace"
    error_lines: int = 3
    open: str = CODE_OPEN
    close: str = CODE_CLOSE

    def parse_call(self, text: str) -> str | None:
        return extract_last_code(text)

    def submit(self, sandbox: Any, call: str, timeout_s: float, session: list[str] | None) -> cf.Future:
        return sandbox.submit(call, timeout_s, session)

    def run_batch(
        self, sandbox: Any, calls: list[str], timeout_s: float, sessions: list[list[str] | None]
    ) -> list[ToolCall | Exception]:
        return sandbox.run_batch_sync(calls, timeout_s, sessions)

    def observation_ids(self, tokenizer: Any, result: ToolCall, exhausted: bool) -> list[int]:
        body = format_output(result.stdout, result.stderr, result.status, error_lines=self.error_lines)
        body_ids = tokenizer.encode(body, add_special_tokens=False)
        if len(body_ids) > self.output_max_tokens:
            if self.overflow == "truncate":
                body = "[...]\n" + tokenizer.decode(body_ids[-self.output_max_tokens :])
            else:
                body = TOO_LONG_NOTICE
        result.output = body
        text = wrap_output(body) + (EXHAUSTED_NOTICE if exhausted else "")
        return tokenizer.encode(text, add_special_tokens=False)

    def strip_observations(self, text: str) -> str:
        return strip_output_blocks(text)
