r"""Final-answer extraction: the `\boxed{...}` / `\fbox{...}` answers of a response, in linear time.

Model text is untrusted: one pass over the braces and box macros finds every box (a stack of open
braces, indices only, no slicing until a box is chosen), so 20,000 unclosed `\boxed{` cost no more
than reading them once. Inputs are bounded: only the last `MAX_TEXT_CHARS` characters are read, and a
final answer longer than `MAX_ANSWER_CHARS` is no answer (it would only feed sympy a huge expression).

The final answer follows math-verify's rule (latex2sympy2_extended `extract_boxed_content`): walking
back from the last box, earlier boxes belong to the same answer when they end right before it (under
10 characters between) or, with different content, within 70 characters and a separator (`,`, `;`,
`and`, `or`) between: "x = \boxed{-2} and \boxed{1}" answers {-2, 1}. `multi_box="last"` keeps only
the last box. Braces are counted as math-verify counts them (`\{` included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

MAX_TEXT_CHARS = 200_000
"""Only the tail of a longer text is searched for the answer (the answer is at the end)."""
MAX_ANSWER_CHARS = 1_000
"""A final answer longer than this is no answer."""


class MultiBox(str, Enum):
    """How several boxes at the end of a response make the final answer (config `reward.multi_box`)."""

    LAST = "last"
    """Only the last box."""
    ALL = "all"
    """All boxes of the final answer, joined with commas (a set or tuple), as math-verify does."""


_TOKENS = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])|[{}]")
_BRACE_AFTER = re.compile(r"\s*\{")
_BARE_TOKEN = re.compile(r"[ \t]+([^\s$]{1,64})")
_SEPARATOR = re.compile(r"\b(?:and|or)\b|,|;")


@dataclass(frozen=True)
class Box:
    """One box macro in a text: `start` is its backslash; `open`/`close` its braces (-1 if absent)."""

    start: int
    open: int = -1
    close: int = -1
    bare: str | None = None
    """The answer of a brace-less `\\boxed 5`."""

    @property
    def closed(self) -> bool:
        return self.close >= 0 or self.bare is not None


def find_boxes(text: str) -> list[Box]:
    """Every box macro in `text`, in order, with its matching braces; O(len(text))."""
    boxes: list[Box] = []
    stack: list[int] = []  # per open brace: index into `boxes`, or -1 for a plain brace
    announced, macro = -1, -1  # the "{" that the last macro opens, and where that macro starts
    for m in _TOKENS.finditer(text):
        tok, pos = m.group(), m.start()
        if tok == "{":
            if pos == announced:
                stack.append(len(boxes))
                boxes.append(Box(macro, pos))
            else:
                stack.append(-1)
        elif tok == "}":
            if stack and (idx := stack.pop()) >= 0:
                boxes[idx] = Box(boxes[idx].start, boxes[idx].open, pos)
        elif brace := _BRACE_AFTER.match(text, m.end()):
            announced, macro = brace.end() - 1, pos
        else:
            bare = _BARE_TOKEN.match(text, m.end()) if tok == "\\boxed" else None
            boxes.append(Box(pos, bare=bare.group(1) if bare else None))
    return boxes


def _content(text: str, b: Box) -> str:
    return b.bare if b.bare is not None else text[b.open + 1 : b.close]


def final_boxes(text: str, multi_box: MultiBox | str = MultiBox.ALL) -> list[str] | None:
    """The contents of the boxes that make the final answer, in order (None if there is none).

    The final answer ends with the last closed box; an unclosed box after it (a truncated response)
    is skipped. Earlier boxes join it under math-verify's rule (module docstring) when
    `multi_box="all"`; consecutive equal contents count once.
    """
    mode = MultiBox(multi_box)
    if len(text) > MAX_TEXT_CHARS:
        text = text[-MAX_TEXT_CHARS:]
    boxes = find_boxes(text)
    i = len(boxes) - 1
    while i >= 0 and not boxes[i].closed:
        i -= 1
    if i < 0:
        return None
    later = boxes[i]
    out = [_content(text, later).strip() if later.bare is None else later.bare]
    if mode is MultiBox.ALL:
        for b in reversed(boxes[:i]):
            if b.bare is not None or not b.closed or b.close > later.start:
                break  # math-verify's backward walk stops at a box that does not close before the next
            content = _content(text, b).strip()
            between = text[b.close + 1 : later.start]
            if not (
                len(between) < 10 or (content != out[-1] and len(between) < 70 and _SEPARATOR.search(between))
            ):
                break
            if content != out[-1]:
                out.append(content)
            later = b
    out.reverse()
    if sum(len(c) for c in out) > MAX_ANSWER_CHARS:
        return None
    return out


def extract_boxed(text: str, multi_box: MultiBox | str = MultiBox.LAST) -> str | None:
    r"""The final `\boxed{}` / `\fbox{}` answer in `text`, nested braces kept (None if there is none).

    With `multi_box="all"`, the boxes of the final answer are joined with commas.

    >>> extract_boxed(r"so \boxed{\frac{1}{2}} and finally \boxed{3}")
    '3'
    >>> extract_boxed(r"\boxed{\frac{a}{b}}")
    '\\frac{a}{b}'
    >>> extract_boxed(r"x = \boxed{-2} and \boxed{1}", multi_box="all")
    '-2,1'
    >>> extract_boxed("no answer") is None
    True
    """
    parts = final_boxes(text, multi_box)
    return None if parts is None else ",".join(parts)


_OUTPUT_OPEN = re.compile(r"(`{3,})output[ \t]*\n")
_PYTHON_OPEN = re.compile(r"```python")
_FENCE = re.compile(r"```")


def strip_output_blocks(text: str, *, outputs: bool = True) -> str:
    """Remove ```python blocks and (with `outputs`) ```output blocks from text: an answer printed by
    code does not count by itself.

    An output block opened with N backticks closes only at a line of at least N backticks
    (CommonMark), which is how `wrap_output` makes injected output unambiguous; a python block closes
    at the next ``` (where generation stopped). An unclosed block runs to the end. Prefer
    `zerotir.reward.segments`, which knows from the token roles what the model wrote.
    """
    out: list[str] = []
    pos = 0
    # The next opening of each kind, searched again only once `pos` has passed it: searching both
    # on every turn rescanned the rest of the text for the kind that is not there (224 KB of python
    # blocks with no output block took 26 s).
    o = _OUTPUT_OPEN.search(text) if outputs else None
    p = _PYTHON_OPEN.search(text)
    while True:
        if o is not None and o.start() < pos:
            o = _OUTPUT_OPEN.search(text, pos)
        if p is not None and p.start() < pos:
            p = _PYTHON_OPEN.search(text, pos)
        if o is None and p is None:
            out.append(text[pos:])
            return "".join(out)
        if o is not None and (p is None or o.start() <= p.start()):
            out.append(text[pos : o.start()])
            close = re.compile(rf"(?m)^`{{{len(o.group(1))},}}[ \t]*$").search(text, o.end())
        else:
            assert p is not None
            out.append(text[pos : p.start()])
            close = _FENCE.search(text, p.end())
        if close is None:
            return "".join(out)
        pos = close.end()
