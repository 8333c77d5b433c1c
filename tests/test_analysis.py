"""Scaling analysis: fits recover known curves, dip detection finds a planted dip, correlations
match scipy, and the report renders for one run, several runs, and a run with missing metrics."""

import json

import numpy as np
import pytest
from scipy import stats

from zerotir.analysis.fits import correlations, detect_dip, ema, fit_all
from zerotir.analysis.report import analyze


@pytest.mark.parametrize(
    "family,fn,params",
    [
        ("linear", lambda x: 0.1 + 0.004 * x, {"a": 0.1, "b": 0.004}),
        ("saturating", lambda x: 0.9 - 0.8 * np.exp(-x / 40), {"a": 0.9, "b": 0.8, "c": 40}),
        (
            "logistic",
            lambda x: 0.8 / (1 + np.exp(-(x - 60) / 8)) + 0.05,
            {"a": 0.8, "b": 8, "c": 60, "d": 0.05},
        ),
        ("log", lambda x: 0.05 + 0.15 * np.log1p(x), {"a": 0.05, "b": 0.15}),
    ],
)
def test_fit_recovers_family_and_parameters(family, fn, params):
    rng = np.random.default_rng(0)
    x = np.arange(0, 150, dtype=float)
    y = fn(x) + rng.normal(0, 0.01, x.size)
    res = fit_all(x, y, n_boot=50)
    best = res["best"]
    assert best.family == family
    for k, v in params.items():
        assert best.params[k] == pytest.approx(v, rel=0.15, abs=0.02), (k, best.params)
    assert best.r2 > 0.95
    lo, hi = best.ci[list(params)[0]]
    assert lo <= best.params[list(params)[0]] <= hi


def test_power_law_recovered():
    rng = np.random.default_rng(1)
    x = np.arange(0, 200, dtype=float)
    y = 0.02 + 0.05 * (1 + x) ** 0.45 + rng.normal(0, 0.005, x.size)
    res = fit_all(x, y, n_boot=0)
    assert res["best"].family == "power"
    assert res["best"].params["c"] == pytest.approx(0.45, abs=0.08)


def test_dip_detection():
    x = np.arange(100, dtype=float)
    y = np.concatenate([np.linspace(0.3, 0.1, 20), np.linspace(0.1, 0.9, 80)])
    y = y + np.random.default_rng(0).normal(0, 0.01, y.size)
    dip = detect_dip(x, y)
    assert dip is not None and 15 <= dip["step"] <= 24 and dip["depth"] == pytest.approx(0.19, abs=0.05)
    assert detect_dip(x, np.linspace(0, 1, 100)) is None  # monotone: no dip


def test_correlations_match_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=50), rng.normal(size=50)
    b = a + 0.5 * b
    c = correlations({"a": a, "b": b})["a~b"]
    assert c["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic)
    assert c["pearson"] == pytest.approx(stats.pearsonr(a, b).statistic)


def test_ema_bias_corrected():
    assert ema([1.0, 1.0, 1.0], 0.9).tolist() == pytest.approx([1.0, 1.0, 1.0])


def write_run(path, n, with_code=True, name="run"):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"name: {name}\n")
    rng = np.random.default_rng(3)
    with open(path / "metrics.jsonl", "w") as f:
        for s in range(n):
            row = {
                "step": s,
                "reward/accuracy": float(0.9 - 0.8 * np.exp(-s / 15) + rng.normal(0, 0.02)),
                "rollout/response_len_mean": 50 + s * 0.5,
            }
            row["tokens/per_s"], row["time/step_s"] = 1000.0, 2.0  # 2,000 tokens per step
            if with_code:
                row["rollout/code_ratio"] = float(
                    min(1, max(0, (0.2 - 0.01 * s) if s < 10 else 0.1 + 0.02 * (s - 10)))
                )
            f.write(json.dumps(row) + "\n")
        f.write('{"step": 99, "reward/acc')  # a line cut by a crash: ignored


def test_report_one_several_and_missing(tmp_path):
    write_run(tmp_path / "a", 60, name="tools")
    write_run(tmp_path / "b", 60, with_code=False, name="no-tools")
    rep = analyze([tmp_path / "a"], tmp_path / "out1")
    fits = json.loads((tmp_path / "out1" / "fits.json").read_text())
    assert fits["tools"]["fits"]["reward/accuracy"]["best"]["family"] in ("saturating", "logistic", "power")
    assert fits["tools"]["dips"]["rollout/code_ratio"]["step"] == pytest.approx(10, abs=3)
    assert fits["tools"]["fits"]["rollout/code_ratio"]["dip"]["step"] == pytest.approx(10, abs=3)
    # against cumulative tokens (2,000 per step) the same family fits, its time constant scaled x2000
    by_step = fits["tools"]["fits"]["reward/accuracy"]["best"]
    by_tok = fits["tools"]["fits_vs_tokens"]["reward/accuracy"]
    assert by_tok["family"] == by_step["family"] and by_tok["r2"] == pytest.approx(by_step["r2"], abs=0.02)
    rep = analyze([tmp_path / "a", tmp_path / "b"], tmp_path / "out2")
    md = (tmp_path / "out2" / "report.md").read_text()
    assert "no-tools" in md and "Missing metrics" in md and "rollout/code_ratio" in md
    html = (tmp_path / "out2" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1
    assert (tmp_path / "out2" / "curves.svg").exists()
    (tmp_path / "empty").mkdir()
    rep = analyze([tmp_path / "empty"], tmp_path / "out3")
    assert rep["problems"] and (tmp_path / "out3" / "report.html").exists()


def test_budget_table_when_runs_differ(tmp_path):
    for b in (0, 2, 4):
        write_run(tmp_path / f"b{b}", 20, name=f"budget{b}")
        (tmp_path / f"b{b}" / "config.yaml").write_text(f"name: budget{b}\nrollout:\n  max_tool_calls: {b}\n")
    analyze([tmp_path / f"b{b}" for b in (0, 2, 4)], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Accuracy vs tool-call budget" in md and "| 4 | budget4 |" in md
