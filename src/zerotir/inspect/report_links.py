"""The report's door to the inspector: writes `inspector.html` next to `report.html` and returns an
HTML section whose per-run curves link every sampled step to `inspector.html#run=R&step=S`.

Plain SVG with `<a>` elements, so the links work in the self-contained report without scripts.
"""

from __future__ import annotations

import html
from pathlib import Path

from zerotir.inspect.page import PAGE_FILE, run_payload, write_page

_W, _H, _PAD = 900, 110, 6
_LINES = (("accuracy", "#1c8a4a", "accuracy"), ("code_ratio", "#3056d3", "code ratio"))


def _curve_svg(run_index: int, run: dict) -> str:
    sample_steps = sorted({s["step"] for s in run["samples"]})
    steps = [m["step"] for m in run["metrics"]] + sample_steps
    x0, x1 = min(steps), max(steps)

    def X(s: float) -> float:
        return _PAD + (0.5 if x1 == x0 else (s - x0) / (x1 - x0)) * (_W - 2 * _PAD)

    def Y(v: float) -> float:
        return _H - 14 - v * (_H - 24)

    parts = [f'<svg viewBox="0 0 {_W} {_H}" width="100%" style="max-width:{_W}px;display:block">']
    parts.append(f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#fafbfc" stroke="#ddd"/>')
    for key, colour, _ in _LINES:
        pts = [(m["step"], m[key]) for m in run["metrics"] if m.get(key) is not None]
        if pts:
            xy = " ".join(f"{X(s):.1f},{Y(v):.1f}" for s, v in pts)
            parts.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="2"/>')
    half = max(3.0, (_W - 2 * _PAD) / max(1, 2 * (x1 - x0 + 1)))
    for s in sample_steps:
        n = sum(1 for r in run["samples"] if r["step"] == s)
        parts.append(
            f'<a href="{PAGE_FILE}#run={run_index}&amp;step={s}"><title>step {s}: {n} samples</title>'
            f'<rect x="{X(s) - half:.1f}" y="0" width="{2 * half:.1f}" height="{_H}" fill="#3056d3" '
            f'fill-opacity="0" onmouseover="this.setAttribute(\'fill-opacity\',.12)" '
            f'onmouseout="this.setAttribute(\'fill-opacity\',0)"/>'
            f'<rect x="{X(s) - 1:.1f}" y="{_H - 9}" width="2" height="8" fill="#17203a"/></a>'
        )
    parts.append("</svg>")
    return "".join(parts)


def inspector_section(
    run_dirs: list[str | Path], out_dir: str | Path, labels: list[str] | None = None
) -> str:
    """Write `out_dir/inspector.html` and return the report section linking to it ("" without samples)."""
    runs = [run_payload(rd, labels[i] if labels else None) for i, rd in enumerate(run_dirs)]
    if not any(r["samples"] for r in runs):
        return ""
    write_page(runs, Path(out_dir) / PAGE_FILE)
    key = " ".join(
        f'<span style="color:{c}">&#9644; {lab}</span>' for _, c, lab in _LINES
    )
    out = [
        "<h2>Samples</h2>",
        f'<p>Open the <a href="{PAGE_FILE}">rollout inspector</a> (trajectories token by token: code, '
        "sandbox output, action mask, logprob gaps, advantages). Click a step on a curve below to see "
        f"the samples of that step. {key}; ticks mark sampled steps.</p>",
    ]
    for i, run in enumerate(runs):
        if run["samples"]:
            out.append(f"<h3>{html.escape(run['label'])}</h3>{_curve_svg(i, run)}")
    return "\n".join(out)
