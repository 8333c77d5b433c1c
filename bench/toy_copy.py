"""Can a toy base copy a hard expression into code? The skill the tools arm's accuracy rests on.

For each held-out hard problem, greedy continuation after the prompt, the restatement the corpus
teaches and an opened block (`... We compute <expr> with Python.\\n```python\\nprint(`): the share
whose printed expression equals the problem's. Then, with the true output injected, the share whose
`\\boxed{}` copies it. The shipped bases in the same run (`toy-v1`, the first; `toy`, the demo's;
`toy-steps`, the base of `zerotir demo --chains`).
Measured: toy-v1 copied 40% (it wrote small generic numbers after `print(`, as in the corpus's
snippets); the copy mix of its second stage raised that to 97%, and the tools arm's held-out
accuracy after 40 RL steps from about 65% to about 93%.

Second, restating what a chain's first block must print (`... We compute <first character>`, greedy):
the share that restates the expression that comes first, for hard problems (it ends the question),
chains of style "steps" (a two-digit product followed by more sentences, toy/world.py) and doubling
chains (a hard product ending the question). This is why `zerotir demo --chains` uses doubling
chains: every base restates a hard problem's expression, none a "steps" chain's first product.

    python bench/toy_copy.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result  # noqa: E402

from zerotir.models import load_causal_lm, load_tokenizer  # noqa: E402
from zerotir.rollout import get_template  # noqa: E402
from zerotir.toy.world import chain_test_split, evaluate_expression, test_split  # noqa: E402


def probe(model_path: str) -> dict:
    tok, model = load_tokenizer(model_path), load_causal_lm(model_path)
    model.eval()
    tmpl = get_template("toy-zerotir")
    hard = [p for p in test_split(256) if p.difficulty == "hard"]
    code_ok = box_ok = 0
    misses = []

    def greedy(text: str, n: int) -> str:
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, ids.shape[1] :])

    for p in hard:
        prompt = tmpl.render(p.problem) + f" We compute {p.expression} with Python.\n```python\nprint("
        m = re.match(r"(.*?)\)\n", greedy(prompt, 24))
        if m and m.group(1) == p.expression:
            code_ok += 1
        elif len(misses) < 5:
            misses.append({"expression": p.expression, "printed": m.group(1) if m else None})
        value = evaluate_expression(p.expression)
        after = greedy(prompt + f"{p.expression})\n```\n```output\n{value}\n```\n", 30)
        b = re.search(r"\\boxed\{(-?\d+)\}", after)
        box_ok += bool(b) and int(b.group(1)) == value
    sets = {"hard": [(p.problem, p.expression) for p in hard]}
    for style in ("steps", "double"):
        sets[f"chain_{style}"] = [(p.problem, p.steps[0]) for p in chain_test_split(64, style=style)]
    restates = {}
    for name, items in sets.items():
        ok = 0
        for problem, first in items:
            said = first[0] + greedy(tmpl.render(problem) + " We compute " + first[0], len(first) + 2)
            ok += said.startswith(first) and not said[len(first) : len(first) + 1].isdigit()
        restates[name] = ok / len(items)
    return {"hard_problems": len(hard), "code_copies_expression": code_ok / len(hard),
            "boxed_copies_output": box_ok / len(hard), "first_misses": misses,
            "restates_first_expression": restates}  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    res = {name: probe(name) for name in ("toy-v1", "toy", "toy-steps")}
    path = write_result("toy_copy", {"bases": res, "method": __doc__.split("\n\n")[1]})
    for name, r in res.items():
        print(f"{name}: code copies the expression {r['code_copies_expression']:.1%}, "
              f"boxed copies the output {r['boxed_copies_output']:.1%} ({r['hard_problems']} hard problems); "
              "restates the first expression: " + ", ".join(
                  f"{k} {v:.1%}" for k, v in r["restates_first_expression"].items()))  # fmt: skip
    print(path)


if __name__ == "__main__":
    main()
