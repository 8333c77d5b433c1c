"""The synthetic pre-training corpus: skills without the habit.

The base model must be able to (a) answer easy questions in its head, (b) write a ```python block that
prints an expression, (c) read an ```output block and copy the printed value into \\boxed{}, but it
must rarely *choose* code when asked a question. Document mix (fractions are knobs):

* `qa`: question -> "We compute <expr>. The answer is \\boxed{v}." (a mental-arithmetic answer; on
  hard problems the tiny model cannot learn v, so its guesses are wrong, like a small LM's);
* `notebook`: text restating an expression, a code block printing it, its output, the boxed copy;
* `snippet`: small code blocks with their outputs (no question);
* `qa_code`: question -> code solution. Only a few percent: RL amplifies a rare behaviour, it does
  not invent one (with 0% of these, tool RL never finds code; measured in the prototype).
"""

from __future__ import annotations

import random

from zerotir.rollout.protocol import CODE_CLOSE, CODE_OPEN, TOY_TOOL_SENTENCE, wrap_output
from zerotir.toy.world import QUESTION_FORMS, evaluate_expression, make_problem

DEFAULT_MIX = {"qa": 0.50, "notebook": 0.38, "snippet": 0.09, "qa_code": 0.03}


def _code_answer(expr: str, value: int) -> str:
    return (
        f" We compute {expr} with Python.\n{CODE_OPEN}\nprint({expr})\n{CODE_CLOSE}"
        + wrap_output(str(value))
        + f"The answer is \\boxed{{{value}}}."
    )


def _question(rng: random.Random, expr: str) -> str:
    prefix = TOY_TOOL_SENTENCE if rng.random() < 0.3 else ""
    return prefix + "Question: " + rng.choice(QUESTION_FORMS).format(e=expr) + "\nAnswer:"


def make_document(rng: random.Random, easy_frac: float, mix: dict[str, float] = DEFAULT_MIX) -> str:
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    difficulty = "easy" if rng.random() < easy_frac else "hard"
    expr = make_problem(rng, difficulty, 0).expression
    value = evaluate_expression(expr)
    if kind == "qa":
        return _question(rng, expr) + f" We compute {expr}. The answer is \\boxed{{{value}}}."
    if kind == "qa_code":
        return _question(rng, expr) + _code_answer(expr, value)
    if kind == "notebook":
        name = rng.choice(["x", "y", "total", "result", "n"])
        return (
            f"Let {name} = {expr}.\n{CODE_OPEN}\n{name} = {expr}\nprint({name})\n{CODE_CLOSE}"
            + wrap_output(str(value))
            + f"So {name} is \\boxed{{{value}}}."
        )
    # snippet: plain code with output, sometimes a list or two prints
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    code, out = rng.choice(
        [
            (f"print({a} + {b})", str(a + b)),
            (f"print({a} * {b})", str(a * b)),
            (f"print(max({a}, {b}))", str(max(a, b))),
            (f"for i in range(3):\n    print(i * {a})", "\n".join(str(i * a) for i in range(3))),
        ]
    )
    return f"{CODE_OPEN}\n{code}\n{CODE_CLOSE}" + wrap_output(out).rstrip("\n")


def corpus_stream(seed: int, easy_frac: float = 0.4, mix: dict[str, float] = DEFAULT_MIX):
    """An endless stream of documents, reproducible from `seed`."""
    rng = random.Random(seed)
    while True:
        yield make_document(rng, easy_frac, mix)
