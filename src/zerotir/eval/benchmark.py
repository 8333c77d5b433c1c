"""`zerotir eval`: benchmarks x tool-call budgets -> results.json + a Markdown table like the paper's.

Everything that decides a number is written next to it: seed, n, temperature, top-p, template,
max tokens, tool-call cap, grader (math-verify version) and the model path.
"""

from __future__ import annotations

import json
import os
import re
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

__all__ = ["audit_grader", "grader_version", "output_names", "results_markdown", "run_benchmarks"]


def grader_version() -> str:
    try:
        return f"zerotir-reward+math-verify=={version('math-verify')}"
    except PackageNotFoundError:
        return "zerotir-reward"


def output_names(benchmarks: list[str]) -> dict[str, str]:
    """benchmark (a bundled name or a path) -> a name safe in file names and table headers:
    `path/to/my.jsonl` -> `my`; two files with the same stem get `-2`, `-3`."""
    out: dict[str, str] = {}
    for b in benchmarks:
        stem = Path(b).stem if ("/" in b or "." in b) else b
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "dataset"
        name, k = base, 2
        while name in out.values():
            name, k = f"{base}-{k}", k + 1
        out[b] = name
    return out


def _write_results(out: Path, results: dict) -> None:
    """results.json and results.md, replaced atomically (a crash leaves the last complete pair)."""
    for fname, text in (
        ("results.json", json.dumps(results, indent=2)),
        ("results.md", results_markdown(results)),
    ):
        tmp = out / f".{fname}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / fname)


def run_benchmarks(
    cfg: RunConfig,
    benchmarks: list[str],
    out_dir: str | Path,
    budgets: list[int] | None = None,
    limit: int | None = None,
    missing_answer: str = "skip",
    engine: Any = None,
    sandbox: Any = None,
    progress: bool = True,
) -> dict:
    """Evaluate `cfg.model.path` under `cfg`'s protocol (`rollout.*`: template, response budget,
    exec timeout, output cap, scheduler; `eval.*`: n, temperature, top-p, seed, batch size) for each
    tool-call budget. `engine` / `sandbox` replace the built ones (tests, an already loaded model).

    Every dataset is read before the model loads (a bad name fails in a second, not after the
    load), and results are written after each (benchmark, budget), so a crash keeps what was done."""
    from zerotir.models import load_causal_lm, load_tokenizer

    threads = build.apply_runtime(cfg)
    e, r, d = cfg.eval, cfg.rollout, cfg.data
    budgets = budgets or [r.max_tool_calls]
    seed = cfg.trainer.seed if e.seed is None else e.seed
    names = output_names(benchmarks)
    data = {}
    for src in benchmarks:
        rows = load_dataset_rows(
            src, d.problem_key, d.answer_key, missing_answer, toy_size=256, toy_split="test"
        )
        data[src] = rows[:limit] if limit else rows
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
            "sources": {names[b]: b for b in benchmarks},
        },
        "benchmarks": {},
        "complete": False,
    }
    t0 = time.time()
    try:
        for src, rows in data.items():
            name = names[src]
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
                    desc=f"{name} calls={b}" if progress else None,
                )
                with open(out / f"samples_{name}_calls{b}.jsonl", "w") as f:
                    for s in res["samples"]:
                        f.write(json.dumps(s) + "\n")
                results["benchmarks"].setdefault(name, {})[str(b)] = res["metrics"]
                results["seconds"] = round(time.time() - t0, 1)
                _write_results(out, results)
    finally:
        if own_sandbox and sandbox is not None:
            sandbox.close()
    results["seconds"] = round(time.time() - t0, 1)
    results["average"] = {
        str(b): sum(r[str(b)]["accuracy"] for r in results["benchmarks"].values())
        / max(1, len(results["benchmarks"]))
        for b in budgets
    }
    results["complete"] = True
    _write_results(out, results)
    return results


def results_markdown(results: dict) -> str:
    """The paper's table: accuracy per benchmark and budget, their average, the fraction of
    responses that ran code (code ratio) and tool calls per response, both averaged over benchmarks."""
    s = results["settings"]
    names = list(results["benchmarks"])
    lines = [
        f"Model `{s['model']}`, template `{s['template']}`, n={s['n']}, T={s['temperature']}, top-p={s['top_p']}, "
        f"max tokens {s['max_tokens']}, seed {s['seed']}, grader {s['grader']}",
        "",
        "| tool calls | " + " | ".join(names) + " | avg | code ratio | calls/response |",
        "|---|" + "---|" * (len(names) + 3),
    ]
    for b in s["budgets"]:
        done = [nm for nm in names if str(b) in results["benchmarks"][nm]]
        if not done:
            continue
        cell = {nm: results["benchmarks"][nm][str(b)] for nm in done}
        accs = [cell[nm]["accuracy"] for nm in done]
        code = [cell[nm]["code_ratio"] for nm in done]
        calls = [cell[nm]["tool_calls_mean"] for nm in done]
        lines.append(
            f"| {b} | "
            + " | ".join(f"{100 * cell[nm]['accuracy']:.1f}" if nm in cell else "–" for nm in names)
            + f" | {100 * sum(accs) / len(accs):.1f} | {sum(code) / len(code):.3f} | {sum(calls) / len(calls):.2f} |"
        )
    if not results.get("complete", True):
        lines += ["", "(incomplete: the evaluation stopped or is still running)"]
    return "\n".join(lines) + "\n"
