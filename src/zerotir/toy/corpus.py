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

`STEPS_MIX` (`--mix steps`) is the second stage of `toy-steps`, the base of `zerotir demo --chains`
(`--init toy`): `COPY_MIX` with a fifth of its documents `double_worked` (a doubling chain, world.py,
worked a block per step with no question) and `CHAIN_SHARE` of its questions doubling chains,
answered in the head or (rarely, as `qa_code`) a block per step.
"""

from __future__ import annotations

import random

from zerotir.rollout.protocol import CODE_CLOSE, CODE_OPEN, TOY_TOOL_SENTENCE, wrap_output
from zerotir.toy.world import QUESTION_FORMS, chain_values, evaluate_expression, make_problem

DEFAULT_MIX = {"qa": 0.50, "notebook": 0.38, "snippet": 0.09, "qa_code": 0.03}
CHAIN_MIX = {"qa": 0.48, "notebook": 0.30, "chain_notebook": 0.10, "snippet": 0.09, "qa_code": 0.03}
COPY_MIX = {"qa": 0.50, "notebook": 0.19, "notebook_print": 0.19, "snippet": 0.09, "qa_code": 0.03}
STEPS_MIX = {"qa": 0.46, "notebook": 0.12, "notebook_print": 0.12, "double_worked": 0.20, "snippet": 0.07,
             "qa_code": 0.03}  # fmt: skip
MIXES = {"default": DEFAULT_MIX, "copy": COPY_MIX, "chain": CHAIN_MIX, "steps": STEPS_MIX}
"""Corpus mixes by the name `zerotir toy pretrain --mix` takes."""
CHAIN_SHARE = 0.15
"""With CHAIN_MIX: the share of question documents that ask a chain."""
CHAIN_DOCUMENTS = ("chain_notebook", "double_worked")
"""Document kinds that work a chain: a mix holding one also asks chains in `CHAIN_SHARE` of its questions."""


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


def _worked_steps(steps: tuple[str, ...]) -> tuple[str, int]:
    """A block per step of a doubling chain, each after the sentence "Now we double it." and printing
    the previous output times two: every operand a block prints is in the output right above it. (This
    tiny model copies a value from there, or an expression that ends the question, but not numbers
    from the middle of a question: `chain_notebook`'s chains, measured in docs/quickstart.md.)"""
    vals = chain_values(steps)
    text = ""
    for k, st in enumerate(steps):
        if k:
            text += "\nNow we double it."
        line = st if k == 0 else st.format(vals[k - 1])
        text += f"\n{CODE_OPEN}\nprint({line})\n{CODE_CLOSE}" + wrap_output(str(vals[k])).rstrip("\n")
    return text + "\n", vals[-1]


def _double_document(rng: random.Random, kind: str) -> str:
    """The `steps` mix's chain documents, on doubling chains (world.py). A chain is never written as
    one expression, so the only code route the corpus shows is a block per step: a worked chain with
    no question (`double_worked`), a question answered in the head (`qa`, a wrong guess for the tiny
    model) or, rarely, with a block per step (`qa_code`). Both answers open with the same restatement
    of the product, as a hard problem's do: what RL teaches after it on hard problems (" with
    Python.") carries over to chains. (With "We compute it step by step." for the head answer, one
    seed in three kept answering chains in the head after 40 steps.)"""
    p = make_problem(rng, "double2" if rng.random() < 0.5 else "double3", 0)
    code, value = _worked_steps(p.steps)
    first = f"We compute {p.steps[0]} with Python."
    if kind == "double_worked":
        return f"{p.problem}\n{first}{code}So the result is \\boxed{{{value}}}."
    q = _question(rng, p.expression, p.problem)
    if kind == "qa":  # the same restatement as the code route, as a hard problem's head answer has
        twice = " twice" if len(p.steps) == 3 else ""
        return q + f" We compute {p.steps[0]} and double it{twice}. The answer is \\boxed{{{value}}}."
    return q + f" {first}{code}The answer is \\boxed{{{value}}}."


def _question(rng: random.Random, expr: str, text: str | None = None) -> str:
    prefix = TOY_TOOL_SENTENCE if rng.random() < 0.3 else ""
    q = text if text is not None else rng.choice(QUESTION_FORMS).format(e=expr)
    return prefix + "Question: " + q + "\nAnswer:"


def make_document(
    rng: random.Random, easy_frac: float, mix: dict[str, float] = DEFAULT_MIX, chain_share: float = 0.0
) -> str:
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    # `chain_share and`: with none, no extra draw, so the default stream is the shipped model's
    if kind in CHAIN_DOCUMENTS or (kind in ("qa", "qa_code") and chain_share and rng.random() < chain_share):
        if "double_worked" in mix:
            return _double_document(rng, kind)
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
