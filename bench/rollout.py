"""Overhead of the tool-integrated rollout over plain generation.

Same model (the shipped toy base model) and prompts. For each repeat:
  (1) the tool-integrated rollout, with the executions answered by `InstantSandbox` (an in-process
      executor that answers the toy's `print(<arithmetic>)` blocks in microseconds), so that its
      wall time is the rollout machinery alone: "excluding time inside the sandbox";
  (2) plain generation of exactly the same number of *model* tokens per prompt (EOS ignored, each
      budget set to its trajectory's sampled-token count; the injected tokens are not generated);
  ratio = (1) / (2). Target <= 1.15.
Both schedulers are measured: `interactive` (the HF engine's one decode loop: rows pause in the
batch while their code runs and resume with the output fed into their KV cache) and `rounds`
(generate to the next stop, execute the batch, re-prefill everything for the next round; what
engines without `generate_interactive` use, and `rollout.scheduler=rounds`). The real sandbox is also run once per repeat and its
wall-clock ratio reported: on a 2-core machine its executions compete with the model for the CPU.

The model, engine, real sandbox, tool-loop settings, sampling and prompts are built through
`zerotir.build` from the toy ZeroTIR preset (trailing `key.sub=value` overrides change it); only the
instant executor is the benchmark's own.

    python bench/rollout.py [--prompts 64] [--repeats 5] [--smoke] [key.sub=value ...]
    python bench/rollout.py --engine vllm   # vLLM's async engine: see rollout_vllm.py
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import io
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_config_args, bench_config, write_result  # noqa: E402

from zerotir import build  # noqa: E402
from zerotir.config import RunConfig  # noqa: E402
from zerotir.rollout import run_tool_rollout  # noqa: E402
from zerotir.types import ToolCall  # noqa: E402

_ARITH = re.compile(r"print\([\d\s+\-*/().]{1,80}\)\s*")


class InstantSandbox:
    """Answers `print(<arithmetic>)` in-process (anything else: an error result); benchmark only."""

    def _run(self, code: str) -> ToolCall:
        if not _ARITH.fullmatch(code.strip() + "\n"):
            return ToolCall(code=code, stderr="not run by the benchmark", status="error", exit_code=1)
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                exec(code, {"__builtins__": {"print": print}})  # noqa: S102 - digits and operators only
        except Exception as e:  # noqa: BLE001
            return ToolCall(code=code, stderr=f"{type(e).__name__}: {e}", status="error", exit_code=1)
        return ToolCall(code=code, stdout=buf.getvalue())

    def submit(self, code, timeout_s=10.0, session=None) -> cf.Future:
        f: cf.Future = cf.Future()
        f.set_result(self._run(code))
        return f

    def run_batch_sync(self, codes, timeout_s=10.0, sessions=None):
        return [self._run(c) for c in codes]


def rollout_bench_config(args: argparse.Namespace) -> RunConfig:
    """The toy ZeroTIR protocol (2 calls, 160 tokens, temperature 1) on `args.model`, with the
    first `args.prompts` held-out toy problems as the prompts."""
    fixed = [f"model.path={args.model}", f"rollout.engine={args.engine}", "data.eval=toy", f"data.eval_size={args.prompts}"]
    if args.engine == "vllm":
        fixed += ["rollout.vllm_async=true"]
    return bench_config("toy-zerotir", fixed, args.overrides)


def code_prompts(cfg: RunConfig, tok):
    """(prompt ids, template). A code-heavy policy makes the comparison meaningful: each prompt ends
    with the sentence that, in the pre-training corpus, introduces a code solution, so most responses
    execute a block, as a trained ZeroTIR policy does."""
    tmpl = build.make_task(cfg, tok).template
    rows = build.load_rows(cfg, "eval")
    ids = [
        tok.encode(
            tmpl.render(r["problem"]) + f" We compute {r['expression']} with Python.\n",
            add_special_tokens=False,
        )
        for r in rows
    ]
    return ids, tmpl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toy")
    ap.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=None, help="default: 5 (hf), 3 (vllm)")
    ap.add_argument("--syncs", type=int, default=5, help="vllm: weight syncs timed")
    ap.add_argument(
        "--sleep-rel",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        default=(0.25, 1.0),
        help="vllm: LO,HI sleep range of the comparable-latency arms, in units of one model segment's time",
    )
    ap.add_argument("--smoke", action="store_true", help="8 prompts, one repeat: only checks that it runs")
    add_config_args(ap)
    args = ap.parse_args()
    if args.smoke:
        args.prompts, args.repeats, args.syncs = 8, 1, 1
    run_cfg = rollout_bench_config(args)
    if args.engine == "vllm":
        from rollout_vllm import run

        args.repeats = args.repeats or 3
        run(args, run_cfg, InstantSandbox, code_prompts, write_result)
        return
    args.repeats = args.repeats or 5
    model, tok = build.load_policy(run_cfg)
    eng = build.make_engine(run_cfg, model, tok)
    prompts, tmpl = code_prompts(run_cfg, tok)
    instant, real = InstantSandbox(), build.make_sandbox(run_cfg)
    if real is None:
        sys.exit("bench/rollout.py: this config executes no code (a no-tool template or rollout.max_tool_calls=0)")
    cfg = build.tool_loop_config(run_cfg)
    arms = {
        "interactive": (instant, cfg),
        "rounds": (instant, replace(cfg, scheduler="rounds")),
        "interactive_real_sandbox": (real, cfg),
    }
    res: dict = {name: {"ratios": [], "tool_s": [], "plain_s": [], "sandbox_wait_s": []} for name in arms}
    calls = []
    with torch.no_grad():
        run_tool_rollout(eng, instant, prompts[:8], tmpl, cfg, build.sampling_params(run_cfg, 99))  # warm-up
        for rep in range(args.repeats):
            for name, (sb, arm_cfg) in arms.items():
                timings: dict[str, float] = {}
                sp = build.sampling_params(run_cfg, rep)
                t0 = time.perf_counter()
                trajs = run_tool_rollout(eng, sb, prompts, tmpl, arm_cfg, sp, timings)
                wall = time.perf_counter() - t0
                n_model = [sum(t.action_mask) for t in trajs]
                t0 = time.perf_counter()
                eng.generate(prompts, build.sampling_params(run_cfg, rep, ignore_eos=True), [[]] * len(prompts), n_model)
                plain = time.perf_counter() - t0
                r = res[name]
                r["tool_s"].append(wall)
                r["plain_s"].append(plain)
                r["sandbox_wait_s"].append(timings["sandbox_s"])
                r["ratios"].append(wall / plain)
                if name == "interactive":
                    calls.append(sum(len(t.tool_calls) for t in trajs) / len(trajs))
                print(
                    f"repeat {rep} {name:>24}: rollout {wall:.2f} s (sandbox wait {timings['sandbox_s']:.2f} s), "
                    f"plain {plain:.2f} s, ratio {wall / plain:.3f}",
                    flush=True,
                )
    real.close()
    for r in res.values():
        r["ratio_median"] = statistics.median(r["ratios"])
    out = {
        "ratio_median": res["interactive"]["ratio_median"],
        "arms": res,
        "calls_per_response": calls,
        "prompts": args.prompts,
        "repeats": args.repeats,
        "target": 1.15,
        "method": "wall(tool rollout, in-process instant executor) / wall(plain generation of the same model-token counts)",
    }
    path = write_result("rollout", out)
    for name, r in res.items():
        print(f"{name}: median ratio {r['ratio_median']:.3f}")
    print(f"target <= 1.15; results: {path}")


if __name__ == "__main__":
    main()
