"""`zerotir analyze`: curves, fits and a self-contained report from one or several runs' metrics.jsonl.

Works on a run that is still going (reads what is there) and on runs with missing metrics (the
report says what is missing instead of failing).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from zerotir.analysis.fits import correlations, detect_dip, ema, fit_all
from zerotir.analysis.intervals import band, mean_rows
from zerotir.logger import read_metrics

# metric key -> (title, y-axis label)
PANELS: dict[str, tuple[str, str]] = {
    "reward/accuracy": ("Training accuracy", "accuracy (fraction correct)"),
    "rollout/code_ratio": ("Code-execution frequency", "fraction of responses with code run"),
    "rollout/tool_calls_mean": ("Tool calls per response", "calls"),
    "rollout/code_in_correct_ratio": ("Code in correct answers", "fraction of correct responses"),
    "rollout/response_len_mean": ("Response length (model tokens)", "tokens"),
    "rollout/total_len_mean": ("Response length (with tool output)", "tokens"),
    "rollout/tool_error_ratio": ("Tool error rate", "fraction of calls"),
    "train/kl": ("KL to reference", "nats/token"),
    "train/entropy": ("Policy entropy", "nats/token"),
    "time/step_s": ("Time per step", "seconds"),
}
FIT_METRICS = [
    "reward/accuracy",
    "rollout/code_ratio",
    "rollout/response_len_mean",
    "rollout/tool_calls_mean",
]
CORR_METRICS = {
    "step": None,
    "code_ratio": "rollout/code_ratio",
    "response_len": "rollout/response_len_mean",
    "accuracy": "reward/accuracy",
}


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r]
    if not pts:
        return np.array([]), np.array([])
    x, y = zip(*pts)
    return np.asarray(x, float), np.asarray(y, float)


def run_config(run_dir: Path) -> dict:
    cfg = run_dir / "config.yaml"
    if cfg.exists():
        import yaml

        try:
            return yaml.safe_load(cfg.read_text()) or {}
        except yaml.YAMLError:
            return {}
    return {}


def run_label(run_dir: Path) -> str:
    return str(run_config(run_dir).get("name") or run_dir.name)


def run_labels(run_dirs: list[Path]) -> list[str]:
    """One distinct label per run directory: the config name, with the directory added where the
    name alone is ambiguous (two runs of one preset), e.g. `toy-zerotir (runs/a)`."""
    names = [run_label(rd) for rd in run_dirs]
    labels = [n if names.count(n) == 1 else f"{n} ({rd})" for n, rd in zip(names, run_dirs)]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:  # the same directory given twice still gets two entries
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} #{seen[lab]}")
    return out


def final_accuracy(rows: list[dict], window: int = 5) -> float | None:
    """The last held-out eval accuracy if the run evaluated, else the mean training accuracy of the last steps."""
    evals = [
        v
        for r in rows
        for k, v in r.items()
        if k.startswith("eval/") and k.endswith("/accuracy") and v is not None
    ]
    if evals:
        return float(evals[-1])
    acc = [r["reward/accuracy"] for r in rows[-window:] if r.get("reward/accuracy") is not None]
    return float(np.mean(acc)) if acc else None


def comparison_tables(run_dirs: list[Path], runs: dict[str, list[dict]]) -> list[str]:
    """Accuracy vs tool-call budget and vs model size, when the runs differ in those."""
    recs = []
    for rd, (label, rows) in zip(run_dirs, runs.items()):
        cfg = run_config(rd)
        recs.append(
            {
                "label": label,
                "budget": (cfg.get("rollout") or {}).get("max_tool_calls"),
                "model": (cfg.get("model") or {}).get("path"),
                "acc": final_accuracy(rows),
                "code": next(
                    (r.get("rollout/code_ratio") for r in reversed(rows) if "rollout/code_ratio" in r), None
                ),
            }
        )
    out = []
    for key, title in (
        ("budget", "Accuracy vs tool-call budget (max_tool_calls)"),
        ("model", "Accuracy vs model"),
    ):
        if len({r[key] for r in recs if r[key] is not None}) < 2:
            continue
        out += [f"## {title}", "", f"| {key} | run | final accuracy | code ratio |", "|---|---|---|---|"]
        for r in sorted(recs, key=lambda r: str(r[key])):
            out.append(f"| {r[key]} | {r['label']} | {_fmt(r['acc'])} | {_fmt(r['code'])} |")
        out.append("")
    return out


def cumulative_tokens(rows: list[dict]) -> tuple[list, np.ndarray] | None:
    """(steps, cumulative generated tokens) from tokens/per_s x time/step_s, or None if not logged."""
    pts = [
        (r["step"], r["tokens/per_s"] * r["time/step_s"])
        for r in rows
        if r.get("tokens/per_s") is not None and r.get("time/step_s") is not None and "step" in r
    ]
    if len(pts) < 4:
        return None
    steps, toks = zip(*sorted(pts))
    return list(steps), np.cumsum(toks)


def analyze_run(rows: list[dict]) -> dict:
    """Fits, dips and correlations of one run's metrics."""
    out: dict = {"steps": len(rows), "fits": {}, "dips": {}, "missing": []}
    for key in FIT_METRICS:
        x, y = _series(rows, key)
        if len(x) == 0:
            out["missing"].append(key)
            continue
        res = fit_all(x, y)
        best = res["best"]
        dip = detect_dip(x, y, smooth=0.5)
        out["fits"][key] = {
            "best": best.to_dict() if best else None,
            "all": {k: v.to_dict() for k, v in res["all"].items()},
            "n": res["n"],
            "dip": dip,
        }
        out["dips"][key] = dip
        # the same metric against cumulative training tokens (a proxy for training compute)
        tok = cumulative_tokens(rows)
        if tok is not None:
            by_step = dict(zip(tok[0], tok[1]))
            xt = np.array([by_step.get(s, np.nan) for s in x])
            ok = np.isfinite(xt)
            if ok.sum() >= 4:
                rt = fit_all(xt[ok], y[ok], n_boot=0)
                out.setdefault("fits_vs_tokens", {})[key] = rt["best"].to_dict() if rt["best"] else None
    cols = {}
    steps = np.array([r.get("step", np.nan) for r in rows], float)
    for name, key in CORR_METRICS.items():
        cols[name] = (
            steps
            if key is None
            else np.array([r.get(key) if r.get(key) is not None else np.nan for r in rows], float)
        )
    out["correlations"] = correlations(cols)
    return out


def plot_runs(
    runs: dict[str, list[dict]],
    out_dir: Path,
    smooth: float = 0.6,
    seeds: dict[str, list[list[dict]]] | None = None,
) -> list[Path]:
    """One panel per logged metric of PANELS. A label with several `seeds` is drawn as the mean over
    its seeds with a shaded 95% band (intervals.band); a single run as its smoothed curve over the raw one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "figure.dpi": 110})
    written = []
    keys = [k for k in PANELS if any(_series(rows, k)[0].size for rows in runs.values())]
    if not keys:
        return written
    ncol = 3
    nrow = (len(keys) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.6 * nrow), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        title, ylabel = PANELS[key]
        for label, rows in runs.items():
            group = (seeds or {}).get(label, [])
            if len(group) > 1:
                parts = [_series(r, key) for r in group]
                if any(not x.size for x, _ in parts):
                    continue
                x, mean, lo, hi = band(parts)
                (line,) = ax.plot(
                    x, mean, label=f"{label} (mean of {len(group)} seeds, 95% band)", linewidth=2
                )
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
                continue
            x, y = _series(rows, key)
            if not x.size:
                continue
            (line,) = ax.plot(x, ema(y, smooth), label=label, linewidth=2)
            ax.plot(x, y, color=line.get_color(), alpha=0.25, linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=9)
    fig.tight_layout()
    for ext in ("png", "svg"):
        p = out_dir / f"curves.{ext}"
        fig.savefig(p)
        written.append(p)
    plt.close(fig)
    return written


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def build_markdown(analyses: dict[str, dict], extra_tables: list[str]) -> str:
    lines = ["# zerotir training analysis", ""]
    for label, a in analyses.items():
        lines += [f"## {label}", "", f"Steps logged: {a['steps']}", ""]
        if a["missing"]:
            lines += [f"Missing metrics (not logged by this run): {', '.join(a['missing'])}", ""]
        lines += ["| metric | best fit (AIC) | parameters | R² | early dip |", "|---|---|---|---|---|"]
        for key, f in a["fits"].items():
            b = f["best"]
            dip = a["dips"].get(key)
            dip_s = f"step {dip['step']:.0f}, depth {dip['depth']:.3g}" if dip else "none"
            if b:
                params = ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
                lines.append(f"| {key} | {b['family']} | {params} | {b['r2']:.3f} | {dip_s} |")
            else:
                lines.append(f"| {key} | too few points | | | {dip_s} |")
        if a.get("fits_vs_tokens"):
            lines += [
                "",
                "| metric vs cumulative tokens | best fit (AIC) | parameters | R² |",
                "|---|---|---|---|",
            ]
            for key, b in a["fits_vs_tokens"].items():
                if b:
                    params = ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
                    lines.append(f"| {key} | {b['family']} | {params} | {b['r2']:.3f} |")
        if a["correlations"]:
            lines += ["", "| pair | Spearman | Pearson | n |", "|---|---|---|---|"]
            for pair, c in a["correlations"].items():
                lines.append(f"| {pair} | {c['spearman']:.3f} | {c['pearson']:.3f} | {c['n']} |")
        lines.append("")
    lines += extra_tables
    return "\n".join(lines)


def _md_to_html(md: str) -> str:
    """Enough Markdown for our own tables and headings."""
    out, in_table = [], False
    for ln in md.splitlines():
        if ln.startswith("|"):
            cells = [c.strip() for c in ln.strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if ln.startswith("## "):
            out.append(f"<h2>{html.escape(ln[3:])}</h2>")
        elif ln.startswith("# "):
            out.append(f"<h1>{html.escape(ln[2:])}</h1>")
        elif ln.strip():
            out.append(f"<p>{html.escape(ln)}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)


def analyze(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    smooth: float = 0.6,
    extra_tables: list[str] | None = None,
    labels: list[str] | None = None,
    seed_dirs: list[list[Path]] | None = None,
) -> dict:
    """The report of `run_dirs`. With `seed_dirs` (one list per run: the seeds of that run, the first
    being `run_dirs`' entry), each run is summarised by the mean over its seeds (fits, tables) and
    drawn with a 95% band; the inspector section lists every seed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}  # keyed by a label unique per directory (run_labels)
    seeds: dict[str, list[list[dict]]] = {}
    problems = []
    dirs = [Path(rd) for rd in run_dirs]
    labels = list(labels) if labels else run_labels(dirs)
    if len(set(labels)) != len(labels):
        raise ValueError(f"analyze: labels must be distinct, got {labels}")
    groups = seed_dirs if seed_dirs is not None else [[d] for d in dirs]
    if len(groups) != len(dirs):
        raise ValueError(f"analyze: {len(groups)} seed groups for {len(dirs)} runs")
    for group, label in zip(groups, labels):
        per_seed = []
        for rd in group:
            rows = read_metrics(Path(rd))
            if not rows:
                problems.append(f"{rd}: no metrics.jsonl rows yet")
            per_seed.append(rows)
        seeds[label] = per_seed
        runs[label] = per_seed[0] if len(per_seed) == 1 else mean_rows(per_seed)
    analyses = {label: analyze_run(rows) for label, rows in runs.items()}
    figs = plot_runs(runs, out_dir, smooth, seeds)
    tables = comparison_tables([Path(r) for r in run_dirs], runs)
    problem_lines = [f"Problems: {'; '.join(problems)}"] if problems else []
    md = build_markdown(analyses, tables + (extra_tables or []) + problem_lines)
    if figs:
        md = md.replace(
            "# zerotir training analysis\n", "# zerotir training analysis\n\n![curves](curves.png)\n", 1
        )
    (out_dir / "report.md").write_text(md)
    img = ""
    png = out_dir / "curves.png"
    if png.exists():
        img = (
            f'<img alt="training curves" style="max-width:100%" src="data:image/png;base64,'
            f'{base64.b64encode(png.read_bytes()).decode()}">'
        )
    body = _md_to_html(md.replace("![curves](curves.png)", ""))
    body = body.replace("</h1>", "</h1>\n" + img, 1)
    from zerotir.inspect.report_links import inspector_section  # lazy: inspect reads run labels from here

    inspected = [Path(rd) for g in groups for rd in g]
    inspected_labels = [
        lab if len(g) == 1 else f"{lab} seed {k}" for g, lab in zip(groups, labels) for k in range(len(g))
    ]
    body += inspector_section(inspected, out_dir, inspected_labels)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
        "th{background:#f3f3f3}"
    )
    (out_dir / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>zerotir report"
        f"</title><style>{style}</style></head><body>{body}</body></html>"
    )
    fits = {
        label: {
            "fits": a["fits"],
            "dips": a["dips"],
            "correlations": a["correlations"],
            "missing": a["missing"],
            "fits_vs_tokens": a.get("fits_vs_tokens", {}),
            "steps": a["steps"],
        }
        for label, a in analyses.items()
    }
    (out_dir / "fits.json").write_text(json.dumps(fits, indent=2))
    return {
        "report_html": str(out_dir / "report.html"),
        "report_md": str(out_dir / "report.md"),
        "figures": [str(p) for p in figs],
        "fits": fits,
        "problems": problems,
    }
