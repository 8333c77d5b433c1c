"""The synthetic arithmetic world of the embedded default.

Problems come in two kinds, chosen so that a tiny model can learn the easy ones "in its head" while
the hard ones need a calculator:

* easy: two-digit additions and one-digit products, which a 2M-parameter model can memorise;
* hard: three-digit x two-digit products and two-operation expressions, which it cannot.

Every problem carries its exact integer answer (computed with Python's ints, never floats) and the
Python expression that computes it; the expression is what the synthetic corpus's code documents
print. Generation is a pure function of the seed, so the held-out split is fixed.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Literal

Difficulty = Literal["easy", "hard", "multi"]

QUESTION_FORMS = (
    "What is {e}?",
    "Compute {e}.",
    "Calculate {e}.",
    "Find the value of {e}.",
)


@dataclass(frozen=True)
class ToyProblem:
    """One arithmetic question with its exact answer."""

    id: str
    problem: str
    answer: str
    expression: str
    difficulty: Difficulty

    def to_row(self) -> dict:
        row = asdict(self)
        row["source"] = "toy"
        return row


def _expr_easy(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{rng.randint(10, 99)} + {rng.randint(10, 99)}"
    return f"{rng.randint(2, 9)} * {rng.randint(2, 9)}"


def _expr_hard(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return f"{rng.randint(100, 999)} * {rng.randint(11, 99)}"
    a, b, c = rng.randint(11, 99), rng.randint(11, 99), rng.randint(100, 999)
    op = rng.choice(["+", "-"])
    return f"{a} * {b} {op} {c}"


def _expr_multi(rng: random.Random) -> str:
    """Two products summed: one code block can do it, but only if the model copies both."""
    return (
        f"{rng.randint(100, 999)} * {rng.randint(11, 99)} + {rng.randint(100, 999)} * {rng.randint(11, 99)}"
    )


_MAKERS = {"easy": _expr_easy, "hard": _expr_hard, "multi": _expr_multi}


def evaluate_expression(expr: str) -> int:
    """Exact integer value of a generated expression (only digits, spaces, + - * are allowed)."""
    if not set(expr) <= set("0123456789 +-*()"):
        raise ValueError(f"not a toy expression: {expr!r}")
    return int(eval(expr, {"__builtins__": {}}, {}))  # noqa: S307 - charset checked above


def make_problem(rng: random.Random, difficulty: Difficulty, idx: int, prefix: str = "toy") -> ToyProblem:
    expr = _MAKERS[difficulty](rng)
    question = rng.choice(QUESTION_FORMS).format(e=expr)
    return ToyProblem(
        id=f"{prefix}-{difficulty}-{idx}",
        problem=question,
        answer=str(evaluate_expression(expr)),
        expression=expr,
        difficulty=difficulty,
    )


def generate_problems(
    n: int,
    seed: int,
    easy_frac: float = 0.4,
    multi_frac: float = 0.0,
    prefix: str = "toy",
) -> list[ToyProblem]:
    """`n` problems, `easy_frac` of them easy, `multi_frac` multi-step, the rest hard."""
    if not 0.0 <= easy_frac + multi_frac <= 1.0:
        raise ValueError("easy_frac + multi_frac must lie in [0, 1]")
    rng = random.Random(seed)
    out: list[ToyProblem] = []
    for i in range(n):
        r = rng.random()
        kind: Difficulty = "easy" if r < easy_frac else ("multi" if r < easy_frac + multi_frac else "hard")
        out.append(make_problem(rng, kind, i, prefix))
    return out


# Fixed seeds: the train stream and the held-out test split never share a seed.
TRAIN_SEED = 1234
TEST_SEED = 98765


def train_split(n: int = 4096, easy_frac: float = 0.4, seed: int = TRAIN_SEED) -> list[ToyProblem]:
    return generate_problems(n, seed, easy_frac=easy_frac, prefix="train")


def test_split(n: int = 256, easy_frac: float = 0.4, seed: int = TEST_SEED) -> list[ToyProblem]:
    return generate_problems(n, seed, easy_frac=easy_frac, prefix="test")
