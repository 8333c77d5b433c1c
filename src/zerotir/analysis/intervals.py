"""Means with 95% intervals across seeds: the demo's numbers and the report's bands.

A few seeds (3 by default) is small, so the interval is Student's t, not the normal one (with 3
seeds t₀.₉₇₅ = 4.30, not 1.96): a band that looks tight because it assumed many seeds would lie.
One seed has no interval (None), which the tables print as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MeanCI:
    """The mean of per-seed values and the half-width of its 95% interval (None for one seed)."""

    mean: float
    half_width: float | None
    n: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci95": self.half_width, "n": self.n}


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean and t-interval half-width t_{(1+level)/2, n-1} · s / √n of per-seed values."""
    v = np.asarray([float(x) for x in values], float)
    if v.size == 0:
        raise ValueError("mean_ci: no values")
    mean = float(v.mean())
    if v.size == 1:
        return MeanCI(mean, None, 1)
    sd = float(v.std(ddof=1))
    t = float(stats.t.ppf(0.5 + level / 2, v.size - 1))
    return MeanCI(mean, t * sd / math.sqrt(v.size), int(v.size))


def mean_dicts(dicts: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float | None]]:
    """Per key (those all dicts share): the mean and the 95% half-width across the dicts."""
    keys = [k for k in dicts[0] if all(k in d and d[k] is not None for d in dicts)]
    cis = {k: mean_ci([d[k] for d in dicts]) for k in keys}
    return {k: c.mean for k, c in cis.items()}, {k: c.half_width for k, c in cis.items()}


def band(
    series: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, low, high) of several runs' (steps, values) on the steps they all logged; low =
    high = mean where only one run is given."""
    series = [(np.asarray(x, float)[np.argsort(x)], np.asarray(y, float)[np.argsort(x)]) for x, y in series]
    common = set(series[0][0].tolist())
    for x, _ in series[1:]:
        common &= set(x.tolist())
    steps = np.array(sorted(common), float)
    if steps.size == 0:
        return steps, steps, steps, steps
    cols = np.stack([y[np.searchsorted(x, steps)] for x, y in series])  # (runs, steps)
    mean = cols.mean(axis=0)
    if cols.shape[0] == 1:
        return steps, mean, mean, mean
    t = float(stats.t.ppf(0.975, cols.shape[0] - 1))
    half = t * cols.std(axis=0, ddof=1) / math.sqrt(cols.shape[0])
    return steps, mean, mean - half, mean + half


def mean_rows(runs: Sequence[Sequence[dict]]) -> list[dict]:
    """One metrics row per step that every run logged: the mean of each numeric key they all have
    (the curve that a group of seeds is fitted and summarised by)."""
    by_step = [{r["step"]: r for r in rows if "step" in r} for rows in runs]
    steps = sorted(set.intersection(*(set(b) for b in by_step))) if by_step else []
    out = []
    for st in steps:
        rs = [b[st] for b in by_step]
        keys = [k for k, v in rs[0].items() if isinstance(v, (int, float)) and k != "step"]
        row: dict = {"step": st}
        for k in keys:
            vals = [r.get(k) for r in rs]
            if all(isinstance(v, (int, float)) for v in vals):
                row[k] = float(np.mean(vals))
        out.append(row)
    return out
