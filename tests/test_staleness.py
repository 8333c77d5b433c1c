"""Staleness bookkeeping (distributed/staleness.py) on hand-made trajectories."""

import pytest

from zerotir.distributed.staleness import stale_groups, staleness_metrics
from zerotir.types import Trajectory

pytestmark = pytest.mark.unit


def traj(segments):
    return Trajectory(
        prompt_ids=[0], meta={"segments": segments, "behaviour_version": min(v for v, _ in segments)}
    )


def test_histogram_token_shares_and_partial_share():
    # learner at version 5: one trajectory all v5, one v4 then v5 (partial), one all v3
    trajs = [traj([(5, 10)]), traj([(4, 6), (5, 4)]), traj([(3, 20)])]
    m = staleness_metrics(trajs, version=5, max_staleness=1)
    assert m["async/staleness_share/0"] == pytest.approx(1 / 3)
    assert m["async/staleness_share/1"] == pytest.approx(1 / 3)
    assert m["async/staleness_share/2"] == pytest.approx(1 / 3)  # over the bound: still reported
    assert m["async/token_share_lag/0"] == pytest.approx(14 / 40)
    assert m["async/token_share_lag/1"] == pytest.approx(6 / 40)
    assert m["async/token_share_lag/2"] == pytest.approx(20 / 40)
    assert m["async/staleness_max"] == 2 and m["async/partial_share"] == pytest.approx(1 / 3)
    assert staleness_metrics([], 5, 1) == {}


def test_stale_groups_are_those_with_any_sample_over_the_bound():
    trajs = [traj([(5, 1)]), traj([(4, 1)]), traj([(5, 1)]), traj([(3, 1)])]
    assert stale_groups(trajs, group_size=2, version=5, max_staleness=1) == [1]
    assert stale_groups(trajs, group_size=2, version=5, max_staleness=2) == []
    assert stale_groups(trajs, group_size=2, version=5, max_staleness=0) == [0, 1]


def test_only_the_distributed_package_imports_ray():
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "zerotir"
    offenders = []
    for path in src.rglob("*.py"):
        if "distributed" in path.relative_to(src).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "ray" or n.startswith("ray.") for n in names):
                offenders.append(str(path.relative_to(src)))
    assert offenders == []
