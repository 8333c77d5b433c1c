"""The `Tool` seam: everything the tool loop needs to know about one kind of tool call.

The loop (tool_loop.py) knows turns, budgets and token bookkeeping; a `Tool` knows its fences (the
stop strings that open and close a call), how a call is parsed from the model's text, how it is
executed (through the sandbox), and how its result is shown to the model (formatted, capped, with
notices). `PythonTool` is ZeroTIR's ```python / ```output protocol (rollout/protocol.py).

The code-fence grammar, here and nowhere else:

- A call opens with three backticks and a language tag from `PYTHON_TAGS` (```python, ```py,
  ```python3; exact, lower case), optional spaces, then a newline. The code starts after that
  newline, so ```python3 leaves no stray `3` line. Other tags (```output, ```pyx, ```text) are text.
- A call closes at the first fence of exactly three backticks after the opening line that is not
  followed by a letter or digit (that would be another fence's tag, e.g. ```output) and either
  starts a line or follows code that is complete Python. Real models merge the closing fence with
  its neighbours under BPE (`print(6*7)````, "```.", "```\n"), and the paper's protocol runs that
  code. Backticks inside the code do not close it: `print("```")` and `s = "a```b"` (`print("` and
  `s = "a` are not complete Python; during generation a stop there is not a close either), nor
  do ```` ```` ```` or "```x".
- Limitation: a line that is exactly ``` inside a multi-line string literal does close the block
  (as in Markdown); the model sees the resulting SyntaxError and can rewrite the code.
- Injected ```output blocks (opened with N >= 3 backticks, `wrap_output`) are skipped whole, so
  code printed by a program is never taken for a call.

The engines stop at `PythonTool.open` = "```py" (a prefix of every accepted tag) and then at
"```"; a stop string is only a candidate: `call_status` says whether the text really opened a call
and really closed it, and the loop keeps generating when it did not.
"""

from __future__ import annotations

import concurrent.futures as cf
import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from zerotir.reward import strip_output_blocks
from zerotir.rollout.protocol import (
    CODE_CLOSE,
    EXHAUSTED_NOTICE,
    TOO_LONG_NOTICE,
    format_output,
    wrap_output,
)
from zerotir.types import StrEnum, ToolCall

PYTHON_TAGS = ("python", "py", "python3")
"""Language tags that open a Python call (the first thing after the three backticks)."""
FENCE_OPEN_STOP = "```py"
"""The engines' stop string for an opening fence: a prefix of every tag in `PYTHON_TAGS`."""

_PY_OPEN = re.compile(r"```(" + "|".join(sorted(PYTHON_TAGS, key=len, reverse=True)) + r")[ \t]*\n")
_OUTPUT_OPEN = re.compile(r"(`{3,})output[ \t]*\n")
_FENCE = re.compile(r"(?<!`)```(?![`\w])")


def _compiles(code: str) -> bool:
    try:
        compile(code, "<call>", "exec")
    except Exception:  # SyntaxError, and anything pathological input makes compile raise
        return False
    return True


def _find_close(text: str, start: int) -> int:
    """Index of the ``` that closes a call whose code starts at `start`, or -1 (the module's grammar)."""
    for m in _FENCE.finditer(text, start):
        i = m.start()
        if i == start or text[i - 1] == "\n" or _compiles(text[start:i]):
            return i
    return -1


class CallStatus(StrEnum):
    """Where the text stands after the engine stopped at a fence."""

    CLOSED = "closed"
    """The last call is complete: execute it."""
    OPEN = "open"
    """A call is open and not really closed yet (the ``` was not a closing line): keep generating code."""
    NOT_A_CALL = "not_a_call"
    """The opening fence was not a Python call (another tag): keep generating text."""


@dataclass(frozen=True)
class CodeBlock:
    tag: str
    code: str
    """From after the opening line up to the closing fence (a closing line's newline included)."""
    closed: bool
    close_at: int = -1
    """Index of the closing ``` in the scanned text (-1: unclosed)."""


def scan_code_blocks(text: str) -> list[CodeBlock]:
    r"""Every Python call in `text` by the module's grammar, in order (the last may be unclosed).

    >>> [b.code for b in scan_code_blocks('```python3\nprint("```")\n```\n')]
    ['print("```")\n']
    >>> scan_code_blocks("```py\ns = 'a```b'")[0].closed
    False
    """
    blocks: list[CodeBlock] = []
    pos = 0
    while True:
        p, o = _PY_OPEN.search(text, pos), _OUTPUT_OPEN.search(text, pos)
        if o is not None and (p is None or o.start() < p.start()):
            end = re.compile(r"^" + o.group(1) + r"[ \t]*$", re.MULTILINE).search(text, o.end())
            if end is None:
                return blocks
            pos = end.end()
            continue
        if p is None:
            return blocks
        c = _find_close(text, p.end())
        if c < 0:
            blocks.append(CodeBlock(p.group(1), text[p.end() :], False))
            return blocks
        blocks.append(CodeBlock(p.group(1), text[p.end() : c], True, c))
        pos = c + 3


def extract_last_code(text: str) -> str | None:
    """The code of the last complete Python call in `text` (None if there is none)."""
    done = [b for b in scan_code_blocks(text) if b.closed]
    return done[-1].code if done else None


def python_call_status(text: str) -> CallStatus:
    r"""After a stop at "```": OPEN when the last call is not closed yet, CLOSED when the last "```" of
    `text` is the closing line of its last call, else NOT_A_CALL (the opening fence had another tag).

    >>> python_call_status('```python\nprint("```'), python_call_status('```py\nx = 1\n```')
    (<CallStatus.OPEN: 'open'>, <CallStatus.CLOSED: 'closed'>)
    >>> python_call_status("```pyx\nnot code\n```")
    <CallStatus.NOT_A_CALL: 'not_a_call'>
    """
    blocks = scan_code_blocks(text)
    if blocks and not blocks[-1].closed:
        return CallStatus.OPEN
    if blocks and blocks[-1].close_at == text.rfind("```"):
        return CallStatus.CLOSED
    return CallStatus.NOT_A_CALL


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

    def call_status(self, text: str) -> CallStatus:
        """After the engine stopped at `close`: is a call really closed (execute), still open (keep
        generating code), or was none opened (keep generating text)?"""
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

    def refusal_ids(self, tokenizer: Any) -> list[int]:
        """Token ids injected in place of a call's output when it was written past the budget."""
        ...

    def strip_observations(self, text: str) -> str:
        """`text` without the injected observations (for rewards that must ignore printed answers)."""
        ...


@dataclass(frozen=True)
class PythonTool:
    """```python blocks run in the sandbox; the result comes back as an ```output block.

    Long outputs (> `output_max_tokens`) are replaced by a notice (`overflow=replace`, the paper's code)
    or keep their tail (`truncate`); tracebacks keep their last `error_lines` lines; after the last
    allowed call a notice says the tool is exhausted: as the output block of a call written past the
    budget (`rollout.exhausted_notice=on_attempt`) or right after the last allowed output."""

    output_max_tokens: int = 256
    overflow: str = "replace"
    error_lines: int = 3
    open: str = FENCE_OPEN_STOP
    close: str = CODE_CLOSE

    def parse_call(self, text: str) -> str | None:
        return extract_last_code(text)

    def call_status(self, text: str) -> CallStatus:
        return python_call_status(text)

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

    def refusal_ids(self, tokenizer: Any) -> list[int]:
        return tokenizer.encode(wrap_output(EXHAUSTED_NOTICE.strip()), add_special_tokens=False)

    def strip_observations(self, text: str) -> str:
        return strip_output_blocks(text)
