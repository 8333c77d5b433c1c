"""Extract math-verify's own test cases into tests/data/math_verify_cases.json.

    python bench/extract_math_verify_cases.py PATH/TO/Math-Verify [--commit SHA]

Reads every `@pytest.mark.parametrize` table of `tests/test_*.py` in a huggingface/Math-Verify
checkout whose rows have a gold and a prediction, and records each row with the options its test
passes to `compare_strings` / `verify` (match types, float precision, strict, set-relation
comparison). The tables are literals; the one row built with an f-string is evaluated with `math`
only. Which rows share our `\\boxed{}` contract is decided at grading time
(`zerotir.reward.agreement.to_contract`), so the data file stays a faithful copy of the source.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "math_verify_cases.json"
DEFAULTS = {
    "match_types": ["latex", "expr"],
    "precision": 6,
    "strict": True,
    "allow_set_relation_comp": False,
}


def _value(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return eval(compile(ast.Expression(node), "<case>", "eval"), {"math": math})  # noqa: S307


def _options(fn: ast.FunctionDef) -> dict[str, object]:
    """The options of the test's `compare_strings(...)` call: a literal, or the name of a parameter."""
    for call in ast.walk(fn):
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "compare_strings":
            opts: dict[str, object] = {}
            for kw in call.keywords:
                try:
                    opts[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    opts[kw.arg] = {"param": ast.unparse(kw.value)}
            return opts
    return {}  # verify(parse(gold), parse(pred)): math-verify's defaults


def extract(repo: Path) -> list[dict]:
    cases = []
    for path in sorted((repo / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for fn in tree.body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            for dec in fn.decorator_list:
                if not (isinstance(dec, ast.Call) and ast.unparse(dec.func) == "pytest.mark.parametrize"):
                    continue
                names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
                if "gold" not in names or "pred" not in names:
                    continue
                opts = _options(fn)
                for row_node in dec.args[1].elts:
                    row = dict(zip(names, (_value(e) for e in row_node.elts)))
                    resolved = {**DEFAULTS}
                    for k, v in opts.items():
                        resolved[k] = row[v["param"]] if isinstance(v, dict) else v
                    expected = row.get("expected", row.get("result"))
                    cases.append(
                        {
                            "file": f"tests/{path.name}",
                            "test": fn.name,
                            "line": row_node.lineno,
                            "gold": row["gold"],
                            "pred": row["pred"],
                            "expected": bool(expected),
                            "options": resolved,
                        }
                    )
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path, help="a checkout of huggingface/Math-Verify")
    ap.add_argument("--commit", default="", help="the checkout's commit, recorded as the source")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    cases = extract(a.repo)
    doc = {
        "source": "https://github.com/huggingface/Math-Verify (tests/test_*.py parametrize tables)",
        "commit": a.commit,
        "license": "Apache-2.0 (the repository's LICENCE); tests/test_all.py carries an MIT notice, "
        "Copyright (c) 2024 The HuggingFace Team. Cases copied verbatim as test data.",
        "extracted_by": "bench/extract_math_verify_cases.py",
        "cases": cases,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases -> {a.out}")


if __name__ == "__main__":
    main()
