"""`zerotir eval`: benchmarks x tool-call budgets -> results.json + a Markdown table like the paper's.

Everything that decides a number is written next to it: seed, n, temperature, top-p, template,
max tokens, tool-call cap, grader (math-verify version) and the model path.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from zerotir.data import load_benchmark, load_dataset_rows
from zerotir.eval.runner import evaluate_rows
from zerotir.reward import extract_boxed, math_reward
from zerotir.rollout import SamplingParams, ToolLoopConfig, get_template


def grader_version() -> str:
    try:
        return f"zerotir-reward+math-verify=={version('math-verify')}"
    except PackageNotFoundError:
        return "zerotir-reward"


def run_benchmarks(
    model: str,
    benchmarks: list[str],
    out_dir: str | Path,
    template: str = "boxed-tir",
    n: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    budgets: list[int] | None = None,
    max_tokens: int = 2048,
    seed: int = 42,
    engine: str = "hf",
    limit: int | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    problem_key: str = "problem",
    answer_key: str = "answer",
    missing_answer: str = "skip",
    dtype: str = "float32",
    gpu_memory_utilization: float = 0.85,
) -> dict:
    from zerotir.sandbox.base import LocalSandbox
    from zerotir.train.models import load_causal_lm, load_tokenizer

    budgets = budgets or [4]
    tok = load_tokenizer(model)
    if engine == "vllm":
        from zerotir.rollout.vllm_engine import VLLMEngine

        eng = VLLMEngine(model, tok, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, seed=seed)
    else:
        from zerotir.rollout.hf_engine import HFEngine

        eng = HFEngine(load_causal_lm(model, dtype, device=device), tok, device=device)
    tmpl = get_template(template)
    sandbox = LocalSandbox() if tmpl.uses_tools and max(budgets) > 0 else None
    results: dict = {
        "settings": {
            "model": model,
            "template": template,
            "n": n,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "seed": seed,
            "budgets": budgets,
            "engine": engine,
            "grader": grader_version(),
            "limit": limit,
        },
        "benchmarks": {},
    }
    t0 = time.time()
    try:
        for name in benchmarks:
            rows = load_dataset_rows(
                name, problem_key, answer_key, missing_answer, toy_size=256, toy_split="test"
            )
            rows = rows[:limit] if limit else rows
            for b in budgets:
                tool_cfg = ToolLoopConfig(max_tool_calls=b, max_response_len=max_tokens)
                res = evaluate_rows(
                    eng,
                    sandbox,
                    rows,
                    tmpl,
                    tool_cfg,
                    SamplingParams(temperature, top_p, max_tokens, seed),
                    n=n,
                    batch_size=batch_size,
                )
                results["benchmarks"].setdefault(name, {})[str(b)] = res["metrics"]
                out = Path(out_dir)
                out.mkdir(parents=True, exist_ok=True)
                with open(out / f"samples_{name}_calls{b}.jsonl", "w") as f:
                    for s in res["samples"]:
                        f.write(json.dumps(s) + "\n")
    finally:
        if sandbox is not None:
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


_REWRITES = [
    ("\\frac", "\\dfrac"),
]


def audit_grader(benchmarks: list[str]) -> dict:
    """Grade each reference answer against itself, against its solution's last \\boxed{}, and against
    simple rewrites; report false negatives (a correct grader scores all of them 1)."""
    report: dict = {}
    for name in benchmarks:
        rows = load_benchmark(name)
        checks = fails = 0
        failures = []
        for r in rows:
            cands = [("self", r["answer"])]
            sol = r.get("solution")
            if sol and extract_boxed(sol) is not None:
                cands.append(("solution_boxed", extract_boxed(sol)))
            for a, b in _REWRITES:
                if a in r["answer"]:
                    cands.append((f"rewrite {a}->{b}", r["answer"].replace(a, b)))
            if _is_decimal_fraction(r["answer"]):
                cands.append(("fraction->decimal", _to_decimal(r["answer"])))
            for kind, cand in cands:
                checks += 1
                if math_reward(f"The answer is \\boxed{{{cand}}}.", r["answer"]) < 1.0:
                    fails += 1
                    failures.append({"id": r["id"], "kind": kind, "answer": r["answer"], "candidate": cand})
        report[name] = {
            "checks": checks,
            "false_negatives": fails,
            "false_negative_rate": fails / max(1, checks),
            "failures": failures[:50],
        }
    return report


def _is_decimal_fraction(ans: str) -> bool:
    import re

    return re.fullmatch(r"\\d?frac\{(\d+)\}\{(\d+)\}", ans.strip()) is not None


def _to_decimal(ans: str) -> str:
    import re

    m = re.fullmatch(r"\\d?frac\{(\d+)\}\{(\d+)\}", ans.strip())
    return repr(int(m.group(1)) / int(m.group(2)))
