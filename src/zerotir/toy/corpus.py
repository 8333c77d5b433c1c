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
* `notebook_print`: text naming an expression, then a block that prints the expression itself (no
  variable): the skill of copying operands right after `print(` without the habit (no question).
  Without it the shipped base copied a hard expression into `print(` only 40% of the time, because
  after `print(` it had seen mostly snippets of random numbers; with it, 98% (docs/quickstart.md);
* `chain_notebook`: a chain's sentences (world.py: a product, then steps on "the result"), one code
  block per step, each printing the previous output combined with the step: the skill of carrying
  a printed value into the next call, without the habit (no question).

Question documents (`qa`, `qa_code`) ask a chain `chain_share` of the time: answered in the head
(`qa`, a wrong guess for the tiny model) or with one block per step (`qa_code`).

The defaults (`DEFAULT_MIX`, `chain_share=0`) are the recipe of the first shipped base model
(`toy-v1`) and draw exactly the stream they drew before chains existed. The demo's base (`toy`) is
`toy-v1` pre-trained further on `COPY_MIX` (`MIXES`, `zerotir toy pretrain --init toy-v1 --mix copy`).
`CHAIN_MIX` with `CHAIN_SHARE` is the corpus of an experimental base that has seen chains (not
shipped: see docs/quickstart.md).
"""

from __future__ import annotations

import random

from zerotir.rollout.protocol import CODE_CLOSE, CODE_OPEN, TOY_TOOL_SENTENCE, wrap_output
from zerotir.toy.world import QUESTION_FORMS, chain_values, evaluate_expression, make_problem

DEFAULT_MIX = {"qa": 0.50, "notebook": 0.38, "snippet": 0.09, "qa_code": 0.03}
CHAIN_MIX = {"qa": 0.48, "notebook": 0.30, "chain_notebook": 0.10, "snippet": 0.09, "qa_code": 0.03}
COPY_MIX = {"qa": 0.50, "notebook": 0.19, "notebook_print": 0.19, "snippet": 0.09, "qa_code": 0.03}
MIXES = {"default": DEFAULT_MIX, "copy": COPY_MIX, "chain": CHAIN_MIX}
"""Corpus mixes by the name `zerotir toy pretrain --mix` takes."""
CHAIN_SHARE = 0.15
"""With CHAIN_MIX: the share of question documents that ask a chain."""


def _code_answer(expr: str, value: int) -> str:
    return (
        f" We compute {expr} with Python.\n{CODE_OPEN}\nprint({expr})\n{CODE_CLOSE}"
        + wrap_output(str(value))
        + f"The answer is \\boxed{{{value}}}."
    )


def _chain_code(steps: tuple[str, ...]) -> tuple[str, int]:
    """One block per step, each printing the previous output combined with the step."""
    vals = chain_values(steps)
    text = ""
    for k, st in enumerate(steps):
        line = st if k == 0 else st.format(vals[k - 1])
        text += f"\n{CODE_OPEN}\nprint({line})\n{CODE_CLOSE}" + wrap_output(str(vals[k]))
    return text, vals[-1]


def _question(rng: random.Random, expr: str, text: str | None = None) -> str:
    prefix = TOY_TOOL_SENTENCE if rng.random() < 0.3 else ""
    q = text if text is not None else rng.choice(QUESTION_FORMS).format(e=expr)
    return prefix + "Question: " + q + "\nAnswer:"


def make_document(
    rng: random.Random, easy_frac: float, mix: dict[str, float] = DEFAULT_MIX, chain_share: float = 0.0
) -> str:
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    # `chain_share and`: with none, no extra draw, so the default stream is the shipped model's
    if kind == "chain_notebook" or (kind in ("qa", "qa_code") and chain_share and rng.random() < chain_share):
        p = make_problem(rng, "chain2" if rng.random() < 0.5 else "chain3", 0)
        code, value = _chain_code(p.steps)
        if kind == "chain_notebook":
            later = p.problem.split(p.steps[0], 1)[1][1:]  # the sentences after the first one
            return f"Start with {p.steps[0]}.{later}{code}So the result is \\boxed{{{value}}}."
        q = _question(rng, p.expression, p.problem)
        if kind == "qa":
            return q + f" We compute {p.expression}. The answer is \\boxed{{{value}}}."
        return q + f" We compute it step by step with Python.{code}The answer is \\boxed{{{value}}}."
    difficulty = "easy" if rng.random() < easy_frac else "hard"
    expr = make_problem(rng, difficulty, 0).expression
    value = evaluate_expression(expr)
    if kind == "qa":
        return _question(rng, expr) + f" We compute {expr}. The answer is \\boxed{{{value}}}."
    if kind == "qa_code":
        return _question(rng, expr) + _code_answer(expr, value)
    if kind == "notebook_print":
        return (
            f"Let us compute {expr}.\n{CODE_OPEN}\nprint({expr})\n{CODE_CLOSE}"
            + wrap_output(str(value))
            + f"So it is \\boxed{{{value}}}."
        )
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


def corpus_stream(
    seed: int, easy_frac: float = 0.4, mix: dict[str, float] = DEFAULT_MIX, chain_share: float = 0.0
):
    """An endless stream of documents, reproducible from `seed`."""
    rng = random.Random(seed)
    while True:
        yield make_document(rng, easy_frac, mix, chain_share)
