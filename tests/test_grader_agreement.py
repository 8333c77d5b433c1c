"""Agreement with math-verify's own test suite on the cases that share our \\boxed{} contract."""

from pathlib import Path

import pytest

from zerotir.reward.agreement import agreement, load_cases, to_contract

DATA = Path(__file__).parent / "data" / "math_verify_cases.json"


@pytest.mark.timeout(600)
def test_agreement_with_math_verify_suite_is_at_least_98_percent():
    cases = load_cases(DATA)
    rep = agreement(cases)
    listing = "\n".join(
        f"{d['where']}: expected {d['expected']}, ours {d['ours']}" for d in rep.disagreements
    )
    assert rep.shared >= 180, rep.left_out  # the contract filter keeps most of the suite
    assert rep.rate >= 0.98, f"{rep.agree}/{rep.shared}:\n{listing}"


def _case(gold, pred, **options):
    o = {"match_types": ["latex", "expr"], "precision": 6, "strict": True, "allow_set_relation_comp": False}
    return {"gold": gold, "pred": pred, "expected": True, "options": {**o, **options}}


@pytest.mark.parametrize(
    "case,mapped",
    [
        (_case("$1/3$", "$\\boxed{\\frac{1}{3}}$"), ("$\\boxed{\\frac{1}{3}}$", "1/3")),
        (_case("$[0,1)$", "$[0,1)$"), ("\\boxed{[0,1)}", "[0,1)")),
        (_case("10/9", "\\frac{10}{9}"), "prediction is free text without a box"),
        (_case("$\\boxed{2}, \\boxed{3}$", "$${2, 3}$$"), ("\\boxed{{2, 3}}", "2,3")),
        (_case("$9$", "Answer $ 9 $"), "prediction is free text without a box"),
        (_case("-5", "-5", match_types=["expr"]), "free-text number extraction (expr only)"),
        (_case("$f(x)$", "$f(y)$", strict=False), "non-default comparison mode"),
        (_case("Final answer: $2$ and more $3$", "$\\boxed{2}$"), "gold is free text without a box"),
    ],
)
def test_to_contract(case, mapped):
    assert to_contract(case) == mapped
