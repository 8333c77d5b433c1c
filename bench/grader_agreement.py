"""Agreement of zerotir's grader with math-verify's own test suite (cases shared with our contract).

    python bench/grader_agreement.py [--multi-box all|last] [--json OUT]

Prints the agreement figure, what was left out and why, and every disagreement with the verdict of
the installed math-verify on the same raw case (its own `compare_strings`), so a reader can tell who is
right. The cases come from tests/data/math_verify_cases.json (bench/extract_math_verify_cases.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from zerotir.reward.agreement import agreement, load_cases

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "math_verify_cases.json"


def math_verify_verdict(case: dict) -> bool:
    """The installed math-verify on the raw case, as its tests call it."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    o = case["options"]
    targets = [
        LatexExtractionConfig(boxed_match_priority=0) if t == "latex" else ExprExtractionConfig()
        for t in o["match_types"]
    ]
    return bool(
        verify(
            parse(case["gold"], targets),
            parse(case["pred"], targets),
            float_rounding=o["precision"],
            strict=o["strict"],
            allow_set_relation_comp=o["allow_set_relation_comp"],
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--multi-box", default="all", choices=["all", "last"])
    ap.add_argument("--json", type=Path, default=None, help="write the report here too")
    a = ap.parse_args()
    cases = load_cases(DATA)
    t0 = time.perf_counter()
    rep = agreement(cases, multi_box=a.multi_box)
    by_where = {f"{c['file']}:{c['line']} {c['test']}": c for c in cases}
    for d in rep.disagreements:
        d["math_verify_installed"] = math_verify_verdict(by_where[d["where"]])
    print(
        f"agreement (multi_box={a.multi_box}): {rep.agree}/{rep.shared} = {100 * rep.rate:.1f}% "
        f"of {len(cases)} math-verify cases ({time.perf_counter() - t0:.0f} s)"
    )
    for why, n in sorted(rep.left_out.items(), key=lambda kv: -kv[1]):
        print(f"  left out {n:3d}: {why}")
    for d in rep.disagreements:
        print(
            f"- {d['where']}: expected {d['expected']}, ours {d['ours']}, "
            f"math-verify installed {d['math_verify_installed']}\n"
            f"    reference {d['reference']!r}\n    response  {d['response']!r}"
        )
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "multi_box": a.multi_box,
                    "shared": rep.shared,
                    "agree": rep.agree,
                    "rate": rep.rate,
                    "left_out": rep.left_out,
                    "disagreements": rep.disagreements,
                },
                indent=1,
                ensure_ascii=False,
            )
        )


if __name__ == "__main__":
    main()
