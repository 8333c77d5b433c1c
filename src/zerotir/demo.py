"""`zerotir demo`: the paper's phenomenon in miniature, on a laptop CPU, from the shipped base model.

Two arms with the same budget, the same trainer, rollout, sandbox and analysis code as real
training: ZeroTIR (tool template, sandboxed execution) and ZeroRL (no-tool template). Each arm is
evaluated before and after RL on the toy world's held-out split; the ZeroTIR policy is then swept
over tool-call budgets on the same split (a block written past the budget is answered with the
paper's exhausted notice instead of being run). The report plots code use, response length and accuracy
against step. RL amplifies a behaviour the base model already shows rarely (a few percent of its
pre-training documents solve a question with code); it does not invent it.

`--seeds N` runs each arm N times (trainer.seed, +1, ...): the summary gives means with 95% t-intervals,
the report draws the curves as bands.

`--chains` is the world where a second call helps: the same arms from the `toy-steps` base with a
quarter of the training problems doubling chains (one call per step), each arm also evaluated on
held-out chains, and the budget sweep run on them too (`budget_sweep_chains`).
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

from zerotir.analysis.intervals import mean_ci, mean_dicts
from zerotir.analysis.report import analyze
from zerotir.config import build_config
from zerotir.eval.runner import SUMMARY_KEYS
from zerotir.logger import read_metrics
from zerotir.rundir import fresh_default, prepare_new_run
from zerotir.train.steps import held_out_metrics
from zerotir.train.trainer import Trainer

ARMS = (("zerotir", "toy-zerotir", "ZeroTIR (tools)"), ("zerorl", "toy-zerorl", "ZeroRL (no tools)"))
CHAIN_ARMS = (
    ("zerotir", "toy-zerotir-chains", "ZeroTIR (tools)"),
    ("zerorl", "toy-zerorl-chains", "ZeroRL (no tools)"),
)
"""`--chains`: the same two arms from the `toy-steps` base, a quarter of the training problems doubling
chains that take one call per step (toy/world.py), a budget of 4 calls."""
CHAIN_SET = "toy-double"
"""The held-out chains `--chains` evaluates on besides the standard split (half 2 calls, half 3)."""
CHAIN_EVAL_SIZE = 128
"""Held-out chains per evaluation (64 of two steps, 64 of three)."""
CHAIN_KEYS = (
    "accuracy",
    "accuracy_double2",
    "accuracy_double3",
    "code_ratio",
    "tool_calls_mean",
    "response_len_mean",
)
SWEEP_BUDGETS = (0, 1, 2, 4)
"""Tool-call budgets the final ZeroTIR policy is evaluated under (the paper's Table 2 / Fig. 5)."""
TREND_KEYS = ("reward/accuracy", "rollout/code_ratio", "rollout/response_len_mean")


def _eval_summary(metrics: dict[str, float], keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, float]:
    out = {}
    for k in keys:
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


class _Clock:
    """Seconds per phase, in the order they happened."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._t = time.time()

    def lap(self, name: str) -> None:
        now = time.time()
        self.phases[name] = round(now - self._t, 1)
        self._t = now


def run_arm(
    preset: str,
    run_dir: Path,
    overrides: list[str],
    console: Console,
    sweep: tuple[int, ...] = (),
    chain_set: str | None = None,
) -> dict:
    """One seed of one arm: base eval, RL, final eval, and (ZeroTIR) the budget sweep; with a
    `chain_set`, each of them on those held-out chains too (`*_chains` keys)."""
    cfg = build_config(preset, overrides=overrides)
    t0 = time.time()
    clock = _Clock()
    trainer = Trainer(cfg, run_dir)
    chain_rows = _chain_rows(cfg, chain_set) if chain_set else []

    def on_chains(label: str, max_tool_calls: int | None = None) -> dict[str, float]:
        return _eval_summary(
            held_out_metrics(cfg, trainer.engine, trainer.sandbox, chain_rows, trainer.task, trainer.tool,
                                   max_tool_calls, desc=f"{label} ({chain_set})"),
            CHAIN_KEYS,
        )  # fmt: skip

    out: dict = {"seed": cfg.trainer.seed}
    clock.lap("setup_s")
    try:
        console.print(
            f"[bold]{preset}[/] seed {cfg.trainer.seed}: evaluating the base model on "
            f"{len(trainer.eval_rows)} held-out problems"
            + (f" and {len(chain_rows)} chains" if chain_rows else "")
        )
        out["base"] = _eval_summary(trainer.evaluate(desc=f"{preset} base eval"))
        if chain_rows:
            out["base_chains"] = on_chains(f"{preset} base eval")
        clock.lap("base_eval_s")
        trainer.fit()
        clock.lap("train_s")
        console.print(f"[bold]{preset}[/] seed {cfg.trainer.seed}: evaluating the final policy")
        out["final"] = _eval_summary(trainer.evaluate(desc=f"{preset} final eval"))
        if chain_rows:
            out["final_chains"] = on_chains(f"{preset} final eval")
        clock.lap("final_eval_s")
        if sweep:
            out["budget_sweep"], chains = {}, {}
            for b in sweep:
                console.print(f"[bold]{preset}[/]: tool-call budget sweep, max_tool_calls={b}")
                out["budget_sweep"][str(b)] = _eval_summary(
                    trainer.evaluate(max_tool_calls=b, desc=f"sweep calls={b}")
                )
                if chain_rows:
                    chains[str(b)] = on_chains(f"sweep calls={b}", b)
            if chains:
                out["budget_sweep_chains"] = chains
            clock.lap("sweep_s")
    finally:
        trainer.close()
    rows_logged = read_metrics(run_dir)
    out.update(
        steps=cfg.trainer.total_steps,
        seconds=round(time.time() - t0, 1),
        phases=clock.phases,
        spearman_vs_step={k.split("/")[-1]: _trend(rows_logged, k) for k in TREND_KEYS},
    )
    return out


def _chain_rows(cfg, chain_set: str) -> list[dict]:
    """The held-out chains, through the loader that reads `data.eval` (so the same rows `zerotir eval
    ... data.eval=toy-double` sees)."""
    from zerotir import build

    data = cfg.data.model_copy(update={"eval": chain_set, "eval_size": CHAIN_EVAL_SIZE})
    return build.load_rows(cfg.model_copy(update={"data": data}), "eval")


def combine(runs: list[dict]) -> dict:
    """An arm's summary over its seeds: per-seed results under `runs`, means under the same keys as one
    run's (`base`, `final`, `budget_sweep`, their `*_chains`, `phases`, `spearman_vs_step`), 95%
    half-widths under `ci95`."""
    out: dict = {"runs": runs, "seeds": [r["seed"] for r in runs], "steps": runs[0]["steps"], "ci95": {}}
    out["seconds"] = round(sum(r["seconds"] for r in runs), 1)
    for stage in ("base", "final", "base_chains", "final_chains"):
        if stage in runs[0]:
            out[stage], out["ci95"][stage] = mean_dicts([r[stage] for r in runs])
    for key in ("budget_sweep", "budget_sweep_chains"):
        if key in runs[0]:
            out[key], out["ci95"][key] = {}, {}
            for b in runs[0][key]:
                out[key][b], out["ci95"][key][b] = mean_dicts([r[key][b] for r in runs])
    out["phases"], _ = mean_dicts([r["phases"] for r in runs])
    out["spearman_vs_step"] = {}
    for k in runs[0]["spearman_vs_step"]:
        vals = [r["spearman_vs_step"][k] for r in runs if r["spearman_vs_step"][k] is not None]
        out["spearman_vs_step"][k] = mean_ci(vals).mean if vals else None
    return out


DEFAULT_OUT = Path("runs/demo")
"""Where the demo writes when no --out is given (a used one: runs/demo-<time> instead)."""


def _seed_dirs(out: Path, arm: str, seeds: int) -> list[Path]:
    """One seed writes into out/<arm> (what `zerotir analyze runs/demo/zerotir` expects); several into
    out/<arm>/seed_<k>."""
    return [out / arm] if seeds == 1 else [out / arm / f"seed_{k}" for k in range(seeds)]


def run_demo(
    out: str | Path | None = None,
    quick: bool = False,
    steps: int | None = None,
    extra_overrides: list[str] | None = None,
    overwrite: bool = False,
    seeds: int = 1,
    chains: bool = False,
) -> dict:
    """Both arms (each `seeds` times), evaluated, analysed and summarised under `out`. Never into an
    old demo: without `out`, runs/demo or a fresh runs/demo-<time>; a used `out` is refused unless
    `overwrite` (which moves it aside)."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
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
    seed_dirs = []
    arms = CHAIN_ARMS if chains else ARMS
    for arm, preset, _ in arms:
        first = build_config(preset, overrides=overrides).trainer.seed
        sweep = SWEEP_BUDGETS if arm == "zerotir" and not quick else ()
        dirs = _seed_dirs(out, arm, seeds)
        runs = [
            run_arm(preset, d, [*overrides, f"trainer.seed={first + k}"], console, sweep,
                    CHAIN_SET if chains else None)
            for k, d in enumerate(dirs)
        ]  # fmt: skip
        summary[arm] = combine(runs)
        seed_dirs.append(dirs)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["quick"] = quick
    summary["n_seeds"] = seeds
    summary["chains"] = chains
    summary["note"] = (
        "RL amplifies a rare behaviour of the base model (it writes code for a few percent of "
        "questions); without such documents in pre-training, tool RL finds nothing to amplify."
    )
    labels = [label for _, _, label in arms]
    rep = analyze(
        [dirs[0] for dirs in seed_dirs],
        out,
        labels=labels,
        extra_tables=[_summary_md(summary)],
        seed_dirs=seed_dirs,
    )
    summary["report"] = rep["report_html"]
    summary["explanation"] = explain(summary, rep["fits"], labels)
    _append_explanation(out, summary["explanation"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(console, summary)
    console.print(f"report: [bold]{rep['report_html']}[/]  summary: {out / 'summary.json'}")
    return summary


def _pm(mean: float, ci: float | None, pct: bool = True) -> str:
    """`63.3% ± 4.1` (or a plain number); no interval for one seed."""
    if pct:
        return f"{mean:.1%}" + (f" ± {ci * 100:.1f}" if ci is not None else "")
    return f"{mean:.2f}" + (f" ± {ci:.2f}" if ci is not None else "")


def _summary_md(summary: dict) -> str:
    n = summary["n_seeds"]
    interval = f"mean ± 95% interval over {n} seeds" if n > 1 else "one seed"
    lines = [
        f"## Held-out evaluation (greedy; {interval})",
        "",
        "| arm | stage | " + " | ".join(SUMMARY_KEYS) + " |",
        "|---|---|" + "---|" * len(SUMMARY_KEYS),
    ]
    for arm, _, _ in ARMS:
        for stage in ("base", "final"):
            vals, cis = summary[arm][stage], summary[arm]["ci95"][stage]
            cells = [_pm(vals[k], cis.get(k), pct=not k.endswith(("_mean",))) for k in SUMMARY_KEYS]
            lines.append(f"| {arm} | {stage} | " + " | ".join(cells) + " |")
    sweep = summary["zerotir"].get("budget_sweep")
    if sweep:
        cis = summary["zerotir"]["ci95"]["budget_sweep"]
        lines += [
            "",
            "## Tool-call budget at evaluation (ZeroTIR final policy)",
            "",
            "| max_tool_calls | accuracy | easy | hard | code ratio | calls/response |",
            "|---|---|---|---|---|---|",
        ]
        for b, v in sweep.items():
            c = cis[b]
            lines.append(
                f"| {b} | {_pm(v['accuracy'], c.get('accuracy'))} | {_pm(v['accuracy_easy'], c.get('accuracy_easy'))} | "
                f"{_pm(v['accuracy_hard'], c.get('accuracy_hard'))} | {_pm(v['code_ratio'], c.get('code_ratio'))} | "
                f"{_pm(v['tool_calls_mean'], c.get('tool_calls_mean'), pct=False)} |"
            )
    lines += _chains_md(summary)
    lines += ["", "## Seconds per phase (mean per seed)", "", "| arm | " + " | ".join(_PHASES) + " |",
              "|---|" + "---|" * len(_PHASES)]  # fmt: skip
    for arm, _, _ in ARMS:
        ph = summary[arm]["phases"]
        lines.append(f"| {arm} | " + " | ".join(f"{ph[p]:.0f}" if p in ph else "–" for p in _PHASES) + " |")
    return "\n".join(lines) + "\n"


_PHASES = ("setup_s", "base_eval_s", "train_s", "final_eval_s", "sweep_s")


def _chains_md(summary: dict) -> list[str]:
    """`--chains`: both arms on the held-out chains, and the tool policy's budget sweep on them."""
    if not summary.get("chains"):
        return []
    head = "| accuracy | 2 calls needed | 3 calls needed | code ratio | calls/response |"
    lines = ["", f"## Held-out doubling chains ({CHAIN_SET}, greedy)", "", "| arm | stage " + head,
             "|---|---|---|---|---|---|---|"]  # fmt: skip

    def cells(v: dict, c: dict) -> str:
        return " | ".join(
            _pm(v[k], c.get(k), pct=k != "tool_calls_mean") for k in CHAIN_KEYS if k != "response_len_mean"
        )

    for arm, _, _ in CHAIN_ARMS:
        for stage in ("base", "final"):
            key = f"{stage}_chains"
            lines.append(f"| {arm} | {stage} | " + cells(summary[arm][key], summary[arm]["ci95"][key]) + " |")
    sweep = summary["zerotir"].get("budget_sweep_chains")
    if sweep:
        cis = summary["zerotir"]["ci95"]["budget_sweep_chains"]
        lines += ["", f"## Tool-call budget on the chains (ZeroTIR final policy, {CHAIN_SET})", "",
                  "| max_tool_calls " + head, "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {b} | " + cells(v, cis[b]) + " |" for b, v in sweep.items()]
    return lines


def baseline_easy_change(summary: dict) -> str:
    """What RL did to the no-tool arm's easy accuracy, judged against its 95% interval when there are
    seeds (one seed: against none): "gain", "loss" or "noise". The report's sentence and the bench's
    fair-baseline check both read this."""
    r = summary["zerorl"]
    base, final = r["base"]["accuracy_easy"], r["final"]["accuracy_easy"]
    half = (r.get("ci95") or {}).get("final", {}).get("accuracy_easy") or 0.0
    if final - half > base:
        return "gain"
    return "loss" if final + half < base else "noise"


_BASELINE_VERDICTS = {
    "gain": "it learns what a 2M-parameter model can do in its head, and nothing of the hard problems.",
    "loss": "RL made it worse at what it could do in its head, so this baseline is not yet a fair one.",
    "noise": "its change on easy problems is within noise; it learns nothing of the hard problems.",
}


def _baseline_verdict(summary: dict) -> str:
    """The sentence must not claim a gain the numbers do not show."""
    return _BASELINE_VERDICTS[baseline_easy_change(summary)]


def explain(summary: dict, fits: dict, labels: list[str]) -> list[str]:
    """What the figures and tables show, in plain words, from this demo's own numbers."""
    z, r = summary["zerotir"], summary["zerorl"]
    tir, rl = labels
    lines = [
        "The paper's claim is in three of the panels, for the tools arm: as RL proceeds, the share of "
        "responses that run code (code-execution frequency), the response length and the training accuracy "
        "rise together. The base model almost never writes code; RL makes it the habit.",
        f"Held-out accuracy: {tir} goes from {z['base']['accuracy']:.1%} to {z['final']['accuracy']:.1%} "
        f"(code use {z['base']['code_ratio']:.0%} → {z['final']['code_ratio']:.0%}); {rl}, the fair baseline "
        f"with the same model, data, steps and samples but no tool, goes from {r['base']['accuracy']:.1%} to "
        f"{r['final']['accuracy']:.1%} (easy problems {r['base']['accuracy_easy']:.1%} → {r['final']['accuracy_easy']:.1%}): "
        + _baseline_verdict(summary),
    ]
    dip = ((fits.get(tir) or {}).get("dips") or {}).get("rollout/response_len_mean")
    lines.append(
        f"Early dip: the tools arm's response length dips at step {dip['step']:.0f} (depth {dip['depth']:.3g}) "
        "before it grows, as the paper describes for code use."
        if dip
        else "Early dip: none detected in the tools arm's response length (the detector's criteria are in analysis/fits.py)."
    )
    sweep = z.get("budget_sweep")
    if sweep:
        accs = ", ".join(f"{b} calls {v['accuracy']:.1%}" for b, v in sweep.items())
        lines.append(
            f"Budget sweep: {accs}. A block written past the budget is answered with the paper's exhausted "
            "notice instead of being run (rollout.exhausted_notice=on_attempt), so a budget the policy does not "
            "exceed shows it what it saw in training. Toy problems need one call: the gain is from 0 to 1 call, "
            "none beyond (in the paper gains taper beyond a few calls)."
        )
    chains = z.get("budget_sweep_chains")
    if chains:
        accs = ", ".join(f"{b} calls {v['accuracy']:.1%}" for b, v in chains.items())
        lines.append(
            f"On the held-out doubling chains, where each step needs the previous step's output and the "
            f'policy writes one block per step, the budget sweep is: {accs}. Half of them ("twice") need two '
            'calls and half ("four times") three: on them accuracy can rise from 1 to 2 calls and from 2 to 4, '
            "where on the standard split it cannot rise past one."
        )
    if summary["n_seeds"] > 1:
        lines.append(
            f"Bands and ± are 95% Student-t intervals over {summary['n_seeds']} seeds: an interval that "
            "crosses another is not a difference."
        )
    return lines


def _append_explanation(out: Path, lines: list[str]) -> None:
    """The explanation as a section of report.md and report.html (after the figures)."""
    import html

    md = out / "report.md"
    if md.exists():
        md.write_text(md.read_text() + "\n## What the figures show\n\n" + "\n\n".join(lines) + "\n")
    page = out / "report.html"
    if page.exists():
        text = page.read_text()
        section = "<h2>What the figures show</h2>" + "".join(f"<p>{html.escape(s)}</p>" for s in lines)
        at = text.find("</h1>")
        img_end = text.find(">", text.find("<img", at)) + 1 if "<img" in text else at + len("</h1>")
        page.write_text(text[:img_end] + section + text[img_end:])


_TABLE_WIDTH = 200
"""The most columns the table may take: a narrow terminal or a pipe (80) must not cut its cells."""


def _print_table(console: Console, summary: dict) -> None:
    n = summary["n_seeds"]
    title = "zerotir demo: held-out toy split, greedy decoding" + (
        f" (mean ± 95% CI, {n} seeds)" if n > 1 else ""
    )
    table = Table(title=title)
    for col in ("arm", "stage", "accuracy", "easy", "hard", "code use", "calls/resp", "resp len"):
        table.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    for arm, _, _ in ARMS:
        for stage in ("base", "final"):
            v, c = summary[arm][stage], summary[arm]["ci95"][stage]
            table.add_row(
                arm,
                stage,
                _pm(v["accuracy"], c.get("accuracy")),
                _pm(v["accuracy_easy"], c.get("accuracy_easy")),
                _pm(v["accuracy_hard"], c.get("accuracy_hard")),
                _pm(v["code_ratio"], c.get("code_ratio")),
                f"{v['tool_calls_mean']:.2f}",
                f"{v['response_len_mean']:.0f}",
            )
    need = Measurement.get(console, console.options.update(width=_TABLE_WIDTH), table).maximum
    narrow = console.width
    console.width = max(narrow, need)  # wider lines wrap in a narrow terminal; cut cells would lie
    try:
        console.print(table, crop=False)
        z = summary["zerotir"]
        for key, label in (
            ("budget_sweep", "budget sweep"),
            ("budget_sweep_chains", f"budget sweep on {CHAIN_SET}"),
        ):
            if z.get(key):
                console.print(f"{label}: " + ", ".join(
                    f"{b} calls {_pm(v['accuracy'], z['ci95'][key][b].get('accuracy'))}" for b, v in z[key].items()
                ))  # fmt: skip
        for arm, _, _ in ARMS:
            ph = summary[arm]["phases"]
            console.print(
                f"{arm} seconds per phase: " + ", ".join(f"{p[:-2]} {ph[p]:.0f}" for p in _PHASES if p in ph)
            )
    finally:
        console.width = narrow
    console.print(f"total {summary['seconds']:.0f} s")
