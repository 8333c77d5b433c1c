"""`zerotir eval`: benchmarks x tool-call budgets -> results.json + a Markdown table like the paper's.

Everything that decides a number is written next to it: seed, n, temperature, top-p, template,
max tokens, tool-call cap, grader (math-verify version) and the model path.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from zerotir import build
from zerotir.config import RunConfig
from zerotir.data import load_dataset_rows
from zerotir.eval.runner import evaluate_rows
from zerotir.reward.audit import audit_grader
from zerotir.rollout import SamplingParams

__all__ = ["audit_grader", "grader_version", "results_markdown", "run_benchmarks"]


def grader_version() -> str:
    try:
        return f"zerotir-reward+math-verify=={version('math-verify')}"
    except PackageNotFoundError:
        return "zerotir-reward"


def run_benchmarks(
    cfg: RunConfig,
    benchmarks: list[str],
    out_dir: str | Path,
    budgets: list[int] | None = None,
    limit: int | None = None,
    missing_answer: str = "skip",
    engine: Any = None,
    sandbox: Any = None,
) -> dict:
    """Evaluate `cfg.model.path` under `cfg`'s protocol (`rollout.*`: template, response budget,
    exec timeout, output cap, scheduler; `eval.*`: n, temperature, top-p, seed, batch size) for each
    tool-call budget. `engine` / `sandbox` replace the built ones (tests, an already loaded model)."""
    from zerotir.models import load_causal_lm, load_tokenizer

    threads = build.apply_runtime(cfg)
    e, r = cfg.eval, cfg.rollout
    budgets = budgets or [r.max_tool_calls]
    seed = cfg.trainer.seed if e.seed is None else e.seed
    if engine is None:
        tok = load_tokenizer(cfg.model.path)
        policy = (
            None
            if r.engine == "vllm"
            else load_causal_lm(cfg.model.path, cfg.model.dtype, cfg.trainer.device)
        )
        engine = build.make_engine(cfg, policy, tok)
    task = build.make_task(cfg, engine.tokenizer)
    own_sandbox = sandbox is None
    if own_sandbox:
        sandbox = build.make_sandbox(cfg, max_tool_calls=max(budgets))
    results: dict = {
        "settings": {
            "model": cfg.model.path,
            "template": r.template,
            "n": e.n_samples,
            "temperature": e.temperature,
            "top_p": e.top_p,
            "max_tokens": r.max_response_len,
            "seed": seed,
            "budgets": budgets,
            "engine": r.engine,
            "device": cfg.trainer.device,
            "dtype": cfg.model.dtype,
            "threads": threads,
            "batch_size": e.batch_size,
            "grader": grader_version(),
            "limit": limit,
            "exec_timeout_s": r.exec_timeout_s,
            "output_max_tokens": r.output_max_tokens,
        },
        "benchmarks": {},
    }
    t0 = time.time()
    d = cfg.data
    try:
        for name in benchmarks:
            rows = load_dataset_rows(
                name, d.problem_key, d.answer_key, missing_answer, toy_size=256, toy_split="test"
            )
            rows = rows[:limit] if limit else rows
            for b in budgets:
                res = evaluate_rows(
                    engine,
                    sandbox,
                    rows,
                    task.template,
                    build.tool_loop_config(cfg, max_tool_calls=b),
                    SamplingParams(e.temperature, e.top_p, r.max_response_len, seed),
                    n=e.n_samples,
                    batch_size=e.batch_size,
                    task=task,
                    tool=build.make_tool(cfg),
                )
                results["benchmarks"].setdefault(name, {})[str(b)] = res["metrics"]
                out = Path(out_dir)
                out.mkdir(parents=True, exist_ok=True)
                with open(out / f"samples_{name}_calls{b}.jsonl", "w") as f:
                    for s in res["samples"]:
                        f.write(json.dumps(s) + "\n")
    finally:
        if own_sandbox and sandbox is not None:
            sandbox.close()
    results["seconds"] = round(time.time() - t0, 1)
    results["average"] = {
        str(b): sum(r[str(b)]["accuracy"] for r in results["benchmarks"].values())
        / max(1, len(results["benchmarks"]))
        for b in budgets
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_markdown(results))
    return results


def results_markdown(results: dict) -> str:
    s = results["settings"]
    names = list(results["benchmarks"])
    lines = [
        f"Model `{s['model']}`, template `{s['template']}`, n={s['n']}, T={s['temperature']}, top-p={s['top_p']}, "
        f"max tokens {s['max_tokens']}, seed {s['seed']}, grader {s['grader']}",
        "",
        "| tool calls | " + " | ".join(names) + " | avg | code ratio |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for b in s["budgets"]:
        accs = [results["benchmarks"][nm][str(b)]["accuracy"] for nm in names]
        code = [results["benchmarks"][nm][str(b)]["tool_calls_mean"] for nm in names]
        lines.append(
            f"| {b} | "
            + " | ".join(f"{100 * a:.1f}" for a in accs)
            + f" | {100 * sum(accs) / len(accs):.1f} | {sum(code) / len(code):.3f} |"
        )
    return "\n".join(lines) + "\n"
