"""Final-answer extraction: the last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces."""

from __future__ import annotations

import re

_OUTPUT_BLOCK = re.compile(r"```(?:output|python)\n.*?(?:```|$)", re.DOTALL)


def strip_output_blocks(text: str) -> str:
    """Remove ```python and ```output blocks: an answer only printed by code does not count by itself."""
    return _OUTPUT_BLOCK.sub("", text)


def extract_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{}` / `\fbox{}` in `text`, nested braces kept.

    >>> extract_boxed(r"so \boxed{\frac{1}{2}} and finally \boxed{3}")
    '3'
    >>> extract_boxed(r"\boxed{\frac{a}{b}}")
    '\\frac{a}{b}'
    >>> extract_boxed("no answer") is None
    True
    """
    best: str | None = None
    best_pos = -1
    for macro in ("\\boxed", "\\fbox"):
        start = text.rfind(macro)
        while start != -1:
            i = start + len(macro)
            while i < len(text) and text[i] == " ":
                i += 1
            if i < len(text) and text[i] == "{":
                depth, j = 0, i
                while j < len(text):
                    if text[j] == "{":
                        depth += 1
                    elif text[j] == "}":
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
                if depth == 0:
                    cand = (start, text[i + 1 : j])
                    if cand[0] > best_pos:
                        best, best_pos = cand[1], cand[0]
                    break
            elif macro == "\\boxed" and i < len(text) and text[i - 1] == " ":
                # "\boxed 5" (no braces): the next token
                m = re.match(r"\s*([^\s$]+)", text[i:])
                if m:
                    if start > best_pos:
                        best, best_pos = m.group(1), start
                    break
            start = text.rfind(macro, 0, start)
    return best
