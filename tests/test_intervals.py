"""Means with 95% t-intervals across seeds, checked by hand, and the report's seed bands."""

import json
import math

import numpy as np
import pytest

from zerotir.analysis.intervals import band, mean_ci, mean_dicts, mean_rows
from zerotir.analysis.report import analyze

T975_2 = 4.302652729911275  # Student t, 0.975 quantile, 2 degrees of freedom (tables)
T975_1 = 12.706204736174698


def test_mean_ci_by_hand():
    c = mean_ci([0.5, 0.6, 0.7])  # sd 0.1
    assert c.mean == pytest.approx(0.6) and c.n == 3
    assert c.half_width == pytest.approx(T975_2 * 0.1 / math.sqrt(3))
    one = mean_ci([0.42])
    assert one.mean == 0.42 and one.half_width is None and one.to_dict() == {"mean": 0.42, "ci95": None, "n": 1}
    assert mean_ci([1.0, 1.0]).half_width == 0.0
    with pytest.raises(ValueError):
        mean_ci([])


def test_mean_dicts_uses_shared_keys_only():
    m, ci = mean_dicts([{"a": 1.0, "b": 2.0}, {"a": 3.0}])
    assert m == {"a": 2.0} and ci["a"] == pytest.approx(T975_1 * math.sqrt(2) / math.sqrt(2))


def test_band_on_common_steps():
    a = (np.array([0, 1, 2]), np.array([0.0, 1.0, 2.0]))
    b = (np.array([3, 2, 1]), np.array([9.0, 4.0, 3.0]))  # unsorted steps are sorted first
    x, mean, lo, hi = band([a, b])
    assert x.tolist() == [1, 2] and mean.tolist() == [2.0, 3.0]
    half = T975_1 * np.array([math.sqrt(2), math.sqrt(2)]) / math.sqrt(2)
    np.testing.assert_allclose(hi - mean, half)
    np.testing.assert_allclose(mean - lo, half)
    x1, m1, lo1, hi1 = band([a])
    assert (m1 == lo1).all() and (m1 == hi1).all()


def test_mean_rows_averages_steps_all_seeds_logged():
    rows = mean_rows([[{"step": 0, "x": 1.0}, {"step": 1, "x": 3.0, "y": 1.0}], [{"step": 1, "x": 5.0}]])
    assert rows == [{"step": 1, "x": 4.0}]


def _write(d, n, shift):
    d.mkdir(parents=True)
    with open(d / "metrics.jsonl", "w") as f:
        for s in range(n):
            f.write(json.dumps({"step": s, "reward/accuracy": 0.1 + 0.01 * s + shift,
                                "rollout/code_ratio": min(1.0, 0.02 * s)}) + "\n")  # fmt: skip


def test_report_with_seed_groups(tmp_path):
    for k in range(3):
        _write(tmp_path / "tools" / f"seed_{k}", 20, 0.01 * k)
    _write(tmp_path / "plain", 20, 0.0)
    groups = [[tmp_path / "tools" / f"seed_{k}" for k in range(3)], [tmp_path / "plain"]]
    rep = analyze([g[0] for g in groups], tmp_path / "out", labels=["tools", "plain"], seed_dirs=groups)
    fits = rep["fits"]
    assert fits["tools"]["steps"] == 20  # fitted on the mean over seeds
    assert (tmp_path / "out" / "curves.png").exists()
    with pytest.raises(ValueError, match="seed groups"):
        analyze([groups[0][0]], tmp_path / "out2", labels=["x"], seed_dirs=groups)
