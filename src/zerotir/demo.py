"""`zerotir demo`: the paper's phenomenon in miniature, on a laptop CPU, from the shipped base model.

Two arms with the same budget, the same trainer, rollout, sandbox and analysis code as real
training: ZeroTIR (tool template, sandboxed execution) and ZeroRL (no-tool template). Each arm is
evaluated before and after RL on the toy world's held-out split; the report plots code use,
response length and accuracy against step. RL amplifies a behaviour the base model already shows
rarely (a few percent of its pre-training documents solve a question with code); it does not invent it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from scipy import stats

from zerotir.analysis.report import analyze
from zerotir.config import build_config
from zerotir.eval.runner import SUMMARY_KEYS
from zerotir.logger import read_metrics
from zerotir.rundir import fresh_default, prepare_new_run
from zerotir.train.trainer import Trainer


def _eval_summary(metrics: dict[str, float]) -> dict[str, float]:
    out = {}
    for k in SUMMARY_KEYS:
        hit = [v for key, v in metrics.items() if key.endswith("/" + k)]
        out[k] = float(hit[0]) if hit else 0.0
    return out


def _trend(rows: list[dict], key: str) -> float | None:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    if len(pts) < 3:
        return None
    x, y = zip(*pts)
    if np.std(y) == 0:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def run_arm(
    preset: str, run_dir: Path, overrides: list[str], console: Console, sweep: tuple[int, ...] = ()
) -> dict:
    cfg = build_config(preset, overrides=overrides)
    t0 = time.time()
    trainer = Trainer(cfg, run_dir)
    try:
        console.print(
            f"[bold]{preset}[/]: evaluating the base model on {len(trainer.eval_rows)} held-out problems"
        )
        base = _eval_summary(trainer.evaluate(desc=f"{preset} base eval"))
        trainer.fit()
        console.print(f"[bold]{preset}[/]: evaluating the final policy")
        final = _eval_summary(trainer.evaluate(desc=f"{preset} final eval"))
        budgets = {}
        for b in sweep:
            console.print(f"[bold]{preset}[/]: tool-call budget sweep, max_tool_calls={b}")
            budgets[str(b)] = _eval_summary(trainer.evaluate(max_tool_calls=b, desc=f"sweep calls={b}"))
    finally:
        trainer.close()
    rows = read_metrics(run_dir)
    out = {
        "base": base,
        "final": final,
        "steps": cfg.trainer.total_steps,
        "seconds": round(time.time() - t0, 1),
        "spearman_vs_step": {
            k.split("/")[-1]: _trend(rows, k)
            for k in ("reward/accuracy", "rollout/code_ratio", "rollout/response_len_mean")
        },
    }
    if budgets:
        out["budget_sweep"] = budgets
    return out


DEFAULT_OUT = Path("runs/demo")
"""Where the demo writes when no --out is given (a used one: runs/demo-<time> instead)."""


def run_demo(
    out: str | Path | None = None,
    quick: bool = False,
    steps: int | None = None,
    extra_overrides: list[str] | None = None,
    overwrite: bool = False,
) -> dict:
    """Both arms, evaluated, analysed and summarised under `out`. Never into an old demo: without
    `out`, runs/demo or a fresh runs/demo-<time>; a used `out` is refused unless `overwrite`
    (which moves it aside)."""
    console = Console()
    if out is None:
        out = fresh_default(DEFAULT_OUT)
    else:
        out = Path(out)
        moved = prepare_new_run(out, overwrite, command="zerotir demo")
        if moved is not None:
            console.print(f"moved the previous demo in {out} to {moved}")
    console.print(f"zerotir demo: writing to [bold]{out}[/]")
    out.mkdir(parents=True, exist_ok=True)
    overrides = list(extra_overrides or [])
    if quick:
        overrides = [
            "trainer.total_steps=3",
            "trainer.prompts_per_step=4",
            "data.eval_size=32",
            "trainer.eval_every=0",
            "trainer.save_every=0",
            *overrides,
        ]
    if steps is not None:
        overrides.append(f"trainer.total_steps={steps}")
    t0 = time.time()
    summary: dict = {}
    for arm, preset in (("zerotir", "toy-zerotir"), ("zerorl", "toy-zerorl")):
        sweep = (0, 1, 2, 4) if arm == "zerotir" and not quick else ()
        summary[arm] = run_arm(preset, out / arm, overrides, console, sweep)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["quick"] = quick
    summary["note"] = (
        "RL amplifies a rare behaviour of the base model (it writes code for a few percent of "
        "questions); without such documents in pre-training, tool RL finds nothing to amplify."
    )
    rep = analyze(
        [out / "zerotir", out / "zerorl"],
        out,
        labels=["ZeroTIR (tools)", "ZeroRL (no tools)"],
        extra_tables=[_summary_md(summary)],
    )
    summary["report"] = rep["report_html"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(console, summary)
    console.print(f"report: [bold]{rep['report_html']}[/]  summary: {out / 'summary.json'}")
    return summary


def _summary_md(summary: dict) -> str:
    lines = [
        "## Held-out evaluation (greedy)",
        "",
        "| arm | stage | " + " | ".join(SUMMARY_KEYS) + " |",
        "|---|---|" + "---|" * len(SUMMARY_KEYS),
    ]
    for arm in ("zerotir", "zerorl"):
        for stage in ("base", "final"):
            vals = summary[arm][stage]
            lines.append(f"| {arm} | {stage} | " + " | ".join(f"{vals[k]:.3f}" for k in SUMMARY_KEYS) + " |")
    sweep = summary["zerotir"].get("budget_sweep")
    if sweep:
        lines += [
            "",
            "## Tool-call budget at evaluation (ZeroTIR final policy)",
            "",
            "| max_tool_calls | accuracy | hard | code ratio | calls/response |",
            "|---|---|---|---|---|",
        ]
        for b, v in sweep.items():
            lines.append(
                f"| {b} | {v['accuracy']:.3f} | {v['accuracy_hard']:.3f} | {v['code_ratio']:.3f} | "
                f"{v['tool_calls_mean']:.2f} |"
            )
    return "\n".join(lines) + "\n"


_TABLE_WIDTH = 200
"""The most columns the table may take: a narrow terminal or a pipe (80) must not cut its cells."""


def _print_table(console: Console, summary: dict) -> None:
    table = Table(title="zerotir demo: held-out toy split, greedy decoding")
    for col in ("arm", "stage", "accuracy", "easy", "hard", "code use", "calls/resp", "resp len"):
        table.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    for arm in ("zerotir", "zerorl"):
        for stage in ("base", "final"):
            v = summary[arm][stage]
            table.add_row(
                arm,
                stage,
                f"{v['accuracy']:.1%}",
                f"{v['accuracy_easy']:.1%}",
                f"{v['accuracy_hard']:.1%}",
                f"{v['code_ratio']:.1%}",
                f"{v['tool_calls_mean']:.2f}",
                f"{v['response_len_mean']:.0f}",
            )
    need = Measurement.get(console, console.options.update(width=_TABLE_WIDTH), table).maximum
    narrow = console.width
    console.width = max(narrow, need)  # wider lines wrap in a narrow terminal; cut cells would lie
    try:
        console.print(table, crop=False)
    finally:
        console.width = narrow
    console.print(f"total {summary['seconds']:.0f} s")
