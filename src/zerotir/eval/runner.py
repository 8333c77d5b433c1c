"""Evaluate a policy on rows with the tool-integrated rollout: per-problem samples -> metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from zerotir import console
from zerotir.eval.metrics import avg_at_k, maj_at_k, max_at_k, pass_at_k
from zerotir.rollout.engine import Engine, SamplingParams
from zerotir.rollout.metrics import rollout_metrics
from zerotir.rollout.protocol import Template
from zerotir.rollout.tool_loop import ToolLoopConfig
from zerotir.rollout.tools import Tool
from zerotir.task import MathTask, Task, sample_rows
from zerotir.types import Trajectory

SUMMARY_KEYS = (
    "accuracy",
    "accuracy_easy",
    "accuracy_hard",
    "code_ratio",
    "tool_calls_mean",
    "response_len_mean",
)
"""The headline metrics of an evaluation (the demo's summary and the toy base model's record)."""

BatchScore = Callable[[list[Trajectory]], list[float]]
"""Grades a batch of trajectories, rewards in order (e.g. `DriverGrader.score`, a grading pool)."""


def evaluate_rows(
    engine: Engine,
    sandbox,
    rows: list[dict],
    template: Template,
    tool_cfg: ToolLoopConfig,
    params: SamplingParams,
    n: int = 1,
    batch_size: int = 64,
    task: Task | None = None,
    tool: Tool | None = None,
    desc: str | None = None,
    score: BatchScore | None = None,
) -> dict:
    """Returns {"metrics": {...}, "samples": [...]} with accuracy (avg@n), pass@k, maj@n, max@n,
    code-use statistics, and per-difficulty accuracy when rows carry a `difficulty` field.

    `task` renders and scores (default: the math task of `template`, the same one training uses);
    `desc` shows a progress bar (responses done) with that label. `score` grades a batch of
    trajectories in order instead of `task.score` one by one: a grading pool's (`DriverGrader.score`)
    where this runs off the main thread, whose signal-based grading timeouts do nothing."""
    task = task if task is not None else MathTask(template, engine.tokenizer)
    items = [(i, j) for i in range(len(rows)) for j in range(n)]
    trajs = []
    bar = console.progress(total=len(items), desc=desc, unit="resp", leave=False) if desc else None
    for b in range(0, len(items), batch_size):
        chunk = items[b : b + batch_size]
        sp = params if params.seed is None else replace(params, seed=params.seed + b)
        out = sample_rows(task, engine, sandbox, [rows[i] for i, _ in chunk], tool_cfg, sp, tool=tool)
        rewards = score(out) if score is not None else [task.score(tr) for tr in out]
        for (i, _), tr, reward in zip(chunk, out, rewards, strict=True):
            tr.prompt_index = i
            tr.reward = reward
            tr.correct = tr.reward >= 1.0
        trajs.extend(out)
        if bar is not None:
            bar.set_postfix(acc=f"{sum(t.correct for t in trajs) / len(trajs):.2f}", refresh=False)
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    per_problem: dict[int, list] = {}
    for tr in trajs:
        per_problem.setdefault(tr.prompt_index, []).append(tr)
    m = rollout_metrics(trajs)
    metrics = {
        "accuracy": m["reward/accuracy"],
        "code_ratio": m["rollout/code_ratio"],
        "tool_calls_mean": m["rollout/tool_calls_mean"],
        "response_len_mean": m["rollout/response_len_mean"],
        "total_len_mean": m["rollout/total_len_mean"],
        "tool_error_ratio": m["rollout/tool_error_ratio"],
        "tool_timeout_ratio": m["rollout/tool_timeout_ratio"],
        "code_in_correct_ratio": m["rollout/code_in_correct_ratio"],
        "finish_length_ratio": m["rollout/finish_length_ratio"],
        "n": n,
        "problems": len(rows),
    }
    corrects = {i: [t.correct for t in ts] for i, ts in per_problem.items()}
    metrics[f"maj@{n}"] = sum(
        maj_at_k([task.answer(t) for t in ts], corrects[i]) for i, ts in per_problem.items()
    ) / max(1, len(rows))
    metrics[f"max@{n}"] = sum(max_at_k(c) for c in corrects.values()) / max(1, len(rows))
    for k in sorted({1, min(4, n), n}):
        metrics[f"pass@{k}"] = sum(pass_at_k(n, sum(c), k) for c in corrects.values()) / max(1, len(rows))
    by_diff: dict[str, list[float]] = {}
    for i, c in corrects.items():
        d = rows[i].get("difficulty")
        if d:
            by_diff.setdefault(d, []).append(avg_at_k(c))
    for d, accs in by_diff.items():
        metrics[f"accuracy_{d}"] = sum(accs) / len(accs)
    samples = [
        {
            "id": rows[t.prompt_index].get("id"),
            "text": t.text,
            "answer": t.answer,
            "correct": t.correct,
            "tool_calls": len(t.tool_calls),
            "finish_reason": t.finish_reason,
        }
        for t in trajs
    ]
    return {"metrics": metrics, "samples": samples}
