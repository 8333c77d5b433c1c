"""Overhead of the tool-integrated rollout over plain generation.

Same model (the shipped toy base model) and prompts: (1) the tool-integrated rollout, timing only
generation (sandbox time excluded, it is reported separately); (2) plain generation of exactly the
same number of model tokens per prompt (EOS ignored, budgets set to each trajectory's model-token
count). The ratio (1)/(2) is the cost of pausing, injecting and resuming. Target <= 1.15.

    python bench/rollout.py [--prompts 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result  # noqa: E402

from zerotir.data import load_dataset_rows  # noqa: E402
from zerotir.rollout import SamplingParams, ToolLoopConfig, get_template, run_tool_rollout  # noqa: E402
from zerotir.rollout.hf_engine import HFEngine  # noqa: E402
from zerotir.sandbox.base import LocalSandbox  # noqa: E402
from zerotir.train.models import load_causal_lm, load_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toy")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tok, model = load_tokenizer(args.model), load_causal_lm(args.model)
    eng = HFEngine(model, tok)
    tmpl = get_template("toy-zerotir")
    rows = load_dataset_rows("toy", toy_size=args.prompts, toy_split="test")
    prompts = [tok.encode(tmpl.render(r["problem"]), add_special_tokens=False) for r in rows]
    # A code-heavy policy makes the comparison meaningful: each prompt ends with the sentence that, in
    # the pre-training corpus, introduces a code solution, so most responses execute a block, as a
    # trained ZeroTIR policy does.
    prompts = [
        p + tok.encode(f" We compute {r['expression']} with Python.\n", add_special_tokens=False)
        for p, r in zip(prompts, rows)
    ]
    sb = LocalSandbox()
    cfg = ToolLoopConfig(max_tool_calls=2, max_response_len=160)
    ratios, tool_s, plain_s, sandbox_s, calls = [], [], [], [], []
    for rep in range(args.repeats):
        timings: dict[str, float] = {}
        with torch.no_grad():
            trajs = run_tool_rollout(
                eng, sb, prompts, tmpl, cfg, SamplingParams(1.0, 1.0, 160, seed=rep), timings
            )
        n_model = [sum(t.action_mask) for t in trajs]
        t0 = time.perf_counter()
        eng.generate(
            prompts, SamplingParams(1.0, 1.0, 160, seed=rep, ignore_eos=True), [[] for _ in prompts], n_model
        )
        plain = time.perf_counter() - t0
        tool_s.append(timings["generate_s"])
        plain_s.append(plain)
        sandbox_s.append(timings["sandbox_s"])
        calls.append(sum(len(t.tool_calls) for t in trajs) / len(trajs))
        ratios.append(timings["generate_s"] / plain)
        print(
            f"repeat {rep}: tool rollout {timings['generate_s']:.2f} s (+ sandbox {timings['sandbox_s']:.2f} s), "
            f"plain {plain:.2f} s, ratio {ratios[-1]:.3f}, calls/response {calls[-1]:.2f}",
            flush=True,
        )
    sb.close()
    res = {
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
        "tool_generate_s": tool_s,
        "plain_s": plain_s,
        "sandbox_s": sandbox_s,
        "calls_per_response": calls,
        "prompts": args.prompts,
        "target": 1.15,
    }
    path = write_result("rollout", res)
    print(f"median ratio {res['ratio_median']:.3f} (target <= 1.15); results: {path}")


if __name__ == "__main__":
    main()
