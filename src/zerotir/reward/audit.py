"""Grader audit: grade each benchmark's reference answers against themselves and simple rewrites.

A correct grader scores every check 1; the false-negative rate is the grader's known blind spot
(`zerotir eval --audit-grader`). It lives with the reward because it tests the reward, not a model.
"""

from __future__ import annotations

import re

from zerotir.data import load_benchmark
from zerotir.reward import extract_boxed, math_reward

_REWRITES = [
    ("\\frac", "\\dfrac"),
]


def audit_grader(benchmarks: list[str]) -> dict:
    """Grade each reference answer against itself, against its solution's last \\boxed{}, and against
    simple rewrites; report false negatives (a correct grader scores all of them 1)."""
    report: dict = {}
    for name in benchmarks:
        rows = load_benchmark(name)
        checks = fails = 0
        failures = []
        for r in rows:
            cands = [("self", r["answer"])]
            sol = r.get("solution")
            if sol and extract_boxed(sol) is not None:
                cands.append(("solution_boxed", extract_boxed(sol)))
            for a, b in _REWRITES:
                if a in r["answer"]:
                    cands.append((f"rewrite {a}->{b}", r["answer"].replace(a, b)))
            if _is_decimal_fraction(r["answer"]):
                cands.append(("fraction->decimal", _to_decimal(r["answer"])))
            for kind, cand in cands:
                checks += 1
                if math_reward(f"The answer is \\boxed{{{cand}}}.", r["answer"]) < 1.0:
                    fails += 1
                    failures.append({"id": r["id"], "kind": kind, "answer": r["answer"], "candidate": cand})
        report[name] = {
            "checks": checks,
            "false_negatives": fails,
            "false_negative_rate": fails / max(1, checks),
            "failures": failures[:50],
        }
    return report


def _is_decimal_fraction(ans: str) -> bool:
    return re.fullmatch(r"\\d?frac\{(\d+)\}\{(\d+)\}", ans.strip()) is not None


def _to_decimal(ans: str) -> str:
    m = re.fullmatch(r"\\d?frac\{(\d+)\}\{(\d+)\}", ans.strip())
    return repr(int(m.group(1)) / int(m.group(2)))
