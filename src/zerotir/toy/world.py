"""The synthetic arithmetic world of the embedded default.

Problems come in two kinds, chosen so that a tiny model can learn the easy ones "in its head" while
the hard ones need a calculator:

* easy: two-digit additions and one-digit products, which a 2M-parameter model can memorise;
* hard: three-digit x two-digit products and two-operation expressions, which it cannot;
* chain2 / chain3 (style "steps"): a two-digit product, then one or two steps applied to "the
  result". Each step needs the previous step's value, so a model that writes one block per step
  (the corpus's way) needs one call per step. The shipped tiny models cannot copy these operands
  (a product followed by more sentences, or numbers from the middle of a question: measured in
  docs/quickstart.md), so no policy of theirs solves them;
* double2 / double3 (style "double"): "twice" / "four times" a hard product. The product ends
  the question, where a hard problem's does, and each later step needs only the previous output:
  a model that writes one block per step (the `steps` corpus's way) needs two or three calls, where
  a second (and third) call genuinely helps (`zerotir demo --chains`).

Every problem carries its exact integer answer (computed with Python's ints, never floats) and the
Python expression that computes it; the expression is what the synthetic corpus's code documents
print. Generation is a pure function of the seed, so the held-out split is fixed.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Literal

Difficulty = Literal["easy", "hard", "multi", "chain2", "chain3", "double2", "double3"]
ChainStyle = Literal["steps", "double"]
CHAIN_KINDS: dict[str, tuple[Difficulty, Difficulty]] = {
    "steps": ("chain2", "chain3"),
    "double": ("double2", "double3"),
}
"""The two- and three-step kinds of each chain style."""

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
    steps: tuple[str, ...] = ()
    """Chains: the expression of each step, `{}` standing for the previous step's value."""

    def to_row(self) -> dict:
        row = asdict(self)
        row["source"] = "toy"
        if not self.steps:
            del row["steps"]
        else:
            row["steps"] = list(self.steps)
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

CHAIN_FORMS = {
    "*": "Multiply the result by {n}.",
    "+": "Add {n} to the result.",
    "-": "Subtract {n} from the result.",
}
"""The sentence of each chain step after the first (the first is one of QUESTION_FORMS)."""


def chain_steps(rng: random.Random, n_steps: int) -> tuple[str, list[str]]:
    """(question, step expressions) of an `n_steps` chain: a two-digit product, then a product by a
    two-digit number, then (for 3 steps) a three-digit addition or subtraction; `{}` is the value so far."""
    a, b = rng.randint(11, 99), rng.randint(11, 99)
    steps = [f"{a} * {b}"]
    text = [rng.choice(QUESTION_FORMS).format(e=steps[0])]
    for k in range(1, n_steps):
        op = "*" if k == 1 else rng.choice(["+", "-"])
        n = rng.randint(11, 99) if op == "*" else rng.randint(100, 999)
        steps.append(f"{{}} {op} {n}")
        text.append(CHAIN_FORMS[op].format(n=n))
    return " ".join(text), steps


DOUBLE_FORMS = {2: ("What is twice {e}?", "Compute twice {e}.", "Find twice {e}."),
                3: ("What is four times {e}?", "Compute four times {e}.", "Find four times {e}.")}  # fmt: skip
"""Doubling chains: the product ends the question (where this tiny model copies it from, as from a
hard problem's), and every later step needs only the previous output, at most six digits."""


def double_steps(rng: random.Random, n_steps: int) -> tuple[str, list[str]]:
    """(question, steps) of a doubling chain: a hard product, then doubled once or twice."""
    e = f"{rng.randint(100, 999)} * {rng.randint(11, 99)}"
    return rng.choice(DOUBLE_FORMS[n_steps]).format(e=e), [e] + ["{0} * 2"] * (n_steps - 1)


_STEP_MAKERS = {
    kind: make
    for style, make in (("steps", chain_steps), ("double", double_steps))
    for kind in CHAIN_KINDS[style]
}
"""(question, steps) maker of each chain kind."""


def chain_values(steps: list[str] | tuple[str, ...]) -> list[int]:
    """The value after each step (exact integers)."""
    vals: list[int] = []
    for st in steps:
        vals.append(evaluate_expression(st.format(vals[-1]) if vals else st))
    return vals


def evaluate_expression(expr: str) -> int:
    """Exact integer value of a generated expression (only digits, spaces, + - * are allowed)."""
    if not set(expr) <= set("0123456789 +-*()"):
        raise ValueError(f"not a toy expression: {expr!r}")
    return int(eval(expr, {"__builtins__": {}}, {}))  # noqa: S307 - charset checked above


def make_problem(rng: random.Random, difficulty: Difficulty, idx: int, prefix: str = "toy") -> ToyProblem:
    if difficulty in _STEP_MAKERS:
        question, steps = _STEP_MAKERS[difficulty](rng, int(difficulty[-1]))
        expr = steps[0]
        for st in steps[1:]:  # left to right, only * after a product: no parentheses needed
            expr = st.format(expr)
        return ToyProblem(
            id=f"{prefix}-{difficulty}-{idx}",
            problem=question,
            answer=str(chain_values(steps)[-1]),
            expression=expr,
            difficulty=difficulty,
            steps=tuple(steps),
        )
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
    chain_frac: float = 0.0,
    chain_style: ChainStyle = "steps",
) -> list[ToyProblem]:
    """`n` problems, `easy_frac` of them easy, `multi_frac` multi-step, `chain_frac` chains of
    `chain_style` (half of two steps, half of three), the rest hard. With `chain_frac=0` the draws are
    those of before chains existed (the fixed test split does not move)."""
    kinds = CHAIN_KINDS[chain_style]
    if not 0.0 <= easy_frac + multi_frac + chain_frac <= 1.0:
        raise ValueError("easy_frac + multi_frac + chain_frac must lie in [0, 1]")
    rng = random.Random(seed)
    out: list[ToyProblem] = []
    for i in range(n):
        r = rng.random()
        kind: Difficulty
        if r < easy_frac:
            kind = "easy"
        elif r < easy_frac + multi_frac:
            kind = "multi"
        elif r < easy_frac + multi_frac + chain_frac:
            kind = kinds[0] if rng.random() < 0.5 else kinds[1]
        else:
            kind = "hard"
        out.append(make_problem(rng, kind, i, prefix))
    return out


# Fixed seeds: the train stream and the held-out test split never share a seed.
TRAIN_SEED = 1234
TEST_SEED = 98765
CHAIN_TEST_SEED = 24680


def train_split(
    n: int = 4096,
    easy_frac: float = 0.4,
    seed: int = TRAIN_SEED,
    chain_frac: float = 0.0,
    chain_style: ChainStyle = "steps",
) -> list[ToyProblem]:
    return generate_problems(
        n, seed, easy_frac=easy_frac, prefix="train", chain_frac=chain_frac, chain_style=chain_style
    )


def test_split(n: int = 256, easy_frac: float = 0.4, seed: int = TEST_SEED) -> list[ToyProblem]:
    return generate_problems(n, seed, easy_frac=easy_frac, prefix="test")


def chain_test_split(
    n: int = 128, seed: int = CHAIN_TEST_SEED, style: ChainStyle = "steps"
) -> list[ToyProblem]:
    """Held-out chains only (half two-step, half three-step): the `toy-chain` eval set (`toy-double`
    with style "double")."""
    return generate_problems(n, seed, easy_frac=0.0, prefix="test", chain_frac=1.0, chain_style=style)
