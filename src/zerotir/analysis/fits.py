"""Scaling fits of a metric against training step: the paper's "agent RL scaling law", made quantitative.

The paper shows code use, response length and accuracy rising with training steps (with an early
dip in code use) but leaves the functional form open. We fit five families and pick by AIC:

  linear      y = a + b·x
  log         y = a + b·ln(1 + x)
  power       y = a + b·(1 + x)^c
  saturating  y = a − b·exp(−x / c)           (rises to the asymptote a)
  logistic    y = a / (1 + exp(−(x − c) / b)) + d

with bootstrap confidence intervals (resampling steps), R², and early-dip detection.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats


def _linear(x, a, b):
    return a + b * x


def _log(x, a, b):
    return a + b * np.log1p(x)


def _power(x, a, b, c):
    return a + b * np.power(1.0 + x, c)


def _saturating(x, a, b, c):
    return a - b * np.exp(-x / c)


def _logistic(x, a, b, c, d):
    return a / (1.0 + np.exp(-(x - c) / b)) + d


FAMILIES: dict[str, tuple[Callable, list[str]]] = {
    "linear": (_linear, ["a", "b"]),
    "log": (_log, ["a", "b"]),
    "power": (_power, ["a", "b", "c"]),
    "saturating": (_saturating, ["a", "b", "c"]),
    "logistic": (_logistic, ["a", "b", "c", "d"]),
}


def _p0(name: str, x: np.ndarray, y: np.ndarray) -> list[list[float]]:
    span = float(x.max() - x.min()) or 1.0
    lo, hi = float(y.min()), float(y.max())
    rng = (hi - lo) or 1.0
    if name == "linear":
        return [[lo, rng / span]]
    if name == "log":
        return [[lo, rng / max(math.log1p(x.max()), 1e-6)]]
    if name == "power":
        return [[lo, rng / span, 1.0], [lo, rng, 0.5], [hi, -rng, -0.5]]
    if name == "saturating":
        return [[hi, rng, span / 3], [hi, rng, span / 10], [hi, rng, span]]
    return [[rng, span / 10, float(np.median(x)), lo], [rng, span / 4, float(x.min() + span / 3), lo]]


@dataclass
class FitResult:
    family: str
    params: dict[str, float]
    r2: float
    aic: float
    bic: float
    ci: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "params": self.params,
            "r2": self.r2,
            "aic": self.aic,
            "bic": self.bic,
            "ci95": self.ci,
        }


def fit_family(name: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Least-squares parameters and residual sum of squares, or None if no start converged."""
    f, _ = FAMILIES[name]
    best = None
    for p0 in _p0(name, x, y):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                p, _ = optimize.curve_fit(f, x, y, p0=p0, maxfev=20000)
                pred = f(x, *p)
            if not np.all(np.isfinite(pred)):
                continue
            rss = float(np.sum((y - pred) ** 2))
            if best is None or rss < best[1]:
                best = (p, rss)
        except (RuntimeError, ValueError, optimize.OptimizeWarning, FloatingPointError):
            continue
    return best


def _criteria(rss: float, n: int, k: int) -> tuple[float, float]:
    rss = max(rss, 1e-12)
    ll = -n / 2 * (math.log(2 * math.pi * rss / n) + 1)
    return 2 * k - 2 * ll, k * math.log(n) - 2 * ll


def fit_all(x, y, n_boot: int = 200, seed: int = 0) -> dict:
    """Fit every family; return {"best": FitResult, "all": {name: FitResult}} (AIC-selected best)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 4:
        return {"best": None, "all": {}, "n": n}
    tss = float(np.sum((y - y.mean()) ** 2)) or 1e-12
    results: dict[str, FitResult] = {}
    for name, (_, pnames) in FAMILIES.items():
        if len(pnames) >= n - 1:
            continue
        got = fit_family(name, x, y)
        if got is None:
            continue
        p, rss = got
        aic, bic = _criteria(rss, n, len(pnames) + 1)
        results[name] = FitResult(name, dict(zip(pnames, map(float, p))), 1 - rss / tss, aic, bic)
    if not results:
        return {"best": None, "all": {}, "n": n}
    best = min(results.values(), key=lambda r: r.aic)
    # bootstrap CI for the chosen family's parameters (resampling steps with replacement)
    rng = np.random.default_rng(seed)
    f, pnames = FAMILIES[best.family]
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if len(np.unique(x[idx])) < len(pnames) + 1:
            continue
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                p, _ = optimize.curve_fit(f, x[idx], y[idx], p0=list(best.params.values()), maxfev=5000)
            draws.append(p)
        except (RuntimeError, ValueError, optimize.OptimizeWarning):
            continue
    if len(draws) >= 10:
        arr = np.array(draws)
        best.ci = {
            k: [float(np.percentile(arr[:, i], 2.5)), float(np.percentile(arr[:, i], 97.5))]
            for i, k in enumerate(pnames)
        }
    return {"best": best, "all": results, "n": n}


def detect_dip(x, y, smooth: float = 0.0, min_depth: float = 0.0) -> dict | None:
    """An early dip: the minimum of `y` before its later maximum, below the starting level.

    Returns {"step", "depth", "start", "min"} where depth = start − min (> min_depth), or None.
    The start level is the mean of the first 10% of points (at least 1), so noise alone is not a dip.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(y) < 5:
        return None
    if smooth:
        y = ema(y, smooth)
    k = max(1, len(y) // 10)
    start = float(np.mean(y[:k]))
    peak = int(np.argmax(y))
    if peak <= k:
        return None
    i_min = k + int(np.argmin(y[k:peak]))
    depth = start - float(y[i_min])
    if depth <= min_depth:
        return None
    return {"step": float(x[i_min]), "depth": depth, "start": start, "min": float(y[i_min])}


def ema(y, alpha: float) -> np.ndarray:
    """Exponential moving average with smoothing `alpha` in [0, 1) (0 = none), bias-corrected."""
    y = np.asarray(y, dtype=float)
    if not alpha:
        return y
    out = np.empty_like(y)
    acc, w = 0.0, 0.0
    for i, v in enumerate(y):
        if not np.isfinite(v):
            out[i] = acc / w if w else np.nan
            continue
        acc = alpha * acc + (1 - alpha) * v
        w = alpha * w + (1 - alpha)
        out[i] = acc / w
    return out


def correlations(columns: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Pairwise Spearman and Pearson correlations between the named series (aligned, finite only)."""
    names = list(columns)
    out: dict[str, dict[str, float]] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            xa, xb = np.asarray(columns[a], float), np.asarray(columns[b], float)
            ok = np.isfinite(xa) & np.isfinite(xb)
            if ok.sum() < 3 or np.std(xa[ok]) == 0 or np.std(xb[ok]) == 0:
                continue
            out[f"{a}~{b}"] = {
                "spearman": float(stats.spearmanr(xa[ok], xb[ok]).statistic),
                "pearson": float(stats.pearsonr(xa[ok], xb[ok]).statistic),
                "n": int(ok.sum()),
            }
    return out
