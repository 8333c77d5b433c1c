"""Staleness bookkeeping of an asynchronous step, as plain functions of the trajectories.

A trajectory's *staleness* is the learner's version at training time minus the oldest policy
version that sampled any of its tokens (`meta["segments"]`, written by the rollout workers). Token
shares are keyed by that lag (0 = the current policy), so dashboards stay comparable across steps.
"""

from __future__ import annotations

from zerotir.types import Trajectory


def staleness_of(tr: Trajectory, version: int) -> int:
    return version - int(tr.meta.get("behaviour_version", version))


def staleness_metrics(trajs: list[Trajectory], version: int, max_staleness: int) -> dict[str, float]:
    """`async/staleness_share/k`: share of trajectories k versions old (k = 0..max(s, observed));
    `async/token_share_lag/k`: share of model tokens sampled by the policy k versions old;
    `async/staleness_max`, `async/partial_share` (trajectories whose tokens span several versions)."""
    if not trajs:
        return {}
    lags = [staleness_of(tr, version) for tr in trajs]
    top = max(max_staleness, *lags)
    out = {f"async/staleness_share/{k}": sum(lag == k for lag in lags) / len(trajs) for k in range(top + 1)}
    tokens: dict[int, int] = {}
    for tr in trajs:
        for v, n in tr.meta.get("segments", []):
            tokens[version - v] = tokens.get(version - v, 0) + n
    total = sum(tokens.values())
    for lag in range(top + 1):
        out[f"async/token_share_lag/{lag}"] = tokens.get(lag, 0) / total if total else 0.0
    out["async/staleness_max"] = float(max(lags))
    out["async/partial_share"] = sum(len(tr.meta.get("segments", [])) > 1 for tr in trajs) / len(trajs)
    return out


def stale_groups(trajs: list[Trajectory], group_size: int, version: int, max_staleness: int) -> list[int]:
    """Indices of the groups (consecutive `group_size` trajectories) with a sample over the bound."""
    return [
        g
        for g in range(len(trajs) // group_size)
        if any(
            staleness_of(tr, version) > max_staleness for tr in trajs[g * group_size : (g + 1) * group_size]
        )
    ]
