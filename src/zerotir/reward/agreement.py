r"""Agreement of our grader with math-verify's own test suite, on the cases that share our contract.

Our contract: the response states its final answer in `\boxed{}` and the reference is an answer (or a
solution whose boxes are the answer). math-verify's tests also exercise free-text extraction ("the
number is 1,000.99€"), other float precisions and non-default comparison modes, which we do not
offer; those rows are left out, each with its reason. A row is shared when its test uses
math-verify's defaults (LaTeX extraction on, strict, no set-relation comparison, float precision 5
or 6) and:
  - the prediction contains `\boxed` (graded as the response), or is one math span (`$…$`, `$$…$$`,
    `\[…\]`, `\(…\)`), taken as what the model boxed: `\boxed{…}`;
  - the gold contains `\boxed` (its final boxes are the reference), is one math span (its inside),
    or is a short plain answer with no math delimiters.
The verdict to match is the test's expected value, not what some math-verify version returns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zerotir.reward.boxed import MultiBox, extract_boxed
from zerotir.reward.verify import math_reward

_SPAN = re.compile(r"\$\$(.*)\$\$|\$([^$]*)\$|\\\[(.*)\\\]|\\\((.*)\\\)", re.DOTALL)


def _single_span(s: str) -> str | None:
    m = _SPAN.fullmatch(s.strip())
    if not m:
        return None
    inner = next(g for g in m.groups() if g is not None)
    if any(d in inner for d in ("$", "\\[", "\\(")):
        return None  # several spans, not one answer
    return inner.strip()


def to_contract(case: dict, multi_box: MultiBox | str = MultiBox.ALL) -> tuple[str, str] | str:
    """(response, reference) for a math-verify test row under our contract, or why it is left out."""
    o = case["options"]
    if "latex" not in o["match_types"]:
        return "free-text number extraction (expr only)"
    if not o["strict"] or o["allow_set_relation_comp"]:
        return "non-default comparison mode"
    if o["precision"] not in (5, 6):
        return f"float precision {o['precision']}"
    pred, gold = case["pred"], case["gold"]
    if "\\boxed" in pred:
        response = pred
    elif (inner := _single_span(pred)) is not None:
        response = f"\\boxed{{{inner}}}"
    else:
        return "prediction is free text without a box"
    if "\\boxed" in gold:
        reference = extract_boxed(gold, multi_box)
        if reference is None:
            return "gold box unclosed"
    elif (inner := _single_span(gold)) is not None:
        reference = inner
    elif not any(d in gold for d in ("$", "\\[", "\\(")) and len(gold) <= 100:
        reference = gold
    else:
        return "gold is free text without a box"
    return response, reference


@dataclass
class Agreement:
    """How often our verdict equals the test's expected one, over the shared rows."""

    shared: int = 0
    agree: int = 0
    disagreements: list[dict] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.agree / max(1, self.shared)


def load_cases(path: str | Path) -> list[dict]:
    return json.loads(Path(path).read_text())["cases"]


def agreement(
    cases: list[dict],
    *,
    grade: Callable[..., float] = math_reward,
    multi_box: MultiBox | str = MultiBox.ALL,
    timeout_s: float = 5,
) -> Agreement:
    """Grade every shared row with `grade(response, reference, multi_box=, timeout_s=)`."""
    rep = Agreement()
    for c in cases:
        mapped = to_contract(c, multi_box)
        if isinstance(mapped, str):
            rep.left_out[mapped] = rep.left_out.get(mapped, 0) + 1
            continue
        response, reference = mapped
        ours = grade(response, reference, multi_box=multi_box, timeout_s=timeout_s) >= 1.0
        rep.shared += 1
        if ours == c["expected"]:
            rep.agree += 1
        else:
            rep.disagreements.append(
                {
                    "where": f"{c['file']}:{c['line']} {c['test']}",
                    "reference": reference,
                    "response": response if len(response) < 300 else "…" + response[-300:],
                    "expected": c["expected"],
                    "ours": ours,
                }
            )
    return rep
