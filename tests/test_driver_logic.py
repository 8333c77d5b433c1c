"""The driver's staleness rule without actors: a scripted pool stands in for the rollout workers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from zerotir.config import build_config  # noqa: E402
from zerotir.distributed.actors import JobResult  # noqa: E402
from zerotir.distributed.driver import DistributedTrainer, LookaheadCursor  # noqa: E402
from zerotir.train.cursor import DataCursor  # noqa: E402
from zerotir.types import Trajectory  # noqa: E402

pytestmark = pytest.mark.unit


class ScriptedPool:
    """Jobs return one trajectory per row, sampled by `versions.pop(0)` (the version the worker held)."""

    def __init__(self, versions: list[int]):
        self.versions, self.workers, self.jobs = versions, [object()], {}

    def submit(self, rows, seed, min_version):
        jid = len(self.jobs)
        self.jobs[jid] = (rows, seed, min_version)
        return jid

    def wait(self, ids):
        out = []
        for j in ids:
            v = self.versions.pop(0)
            trajs = [Trajectory([0], meta={"behaviour_version": v, "segments": [(v, 1)], "row": r["problem"]})
                     for r in self.jobs[j][0]]  # fmt: skip
            out.append(JobResult(j, trajs, {}, 0.0, 0))
        return out


def driver(s: int, pool: ScriptedPool, version: int) -> DistributedTrainer:
    ov = ["algo.group_size=2", f"distributed.max_staleness={s}", "distributed.on_stale=drop"]
    if s:
        ov.append("distributed.off_policy=behaviour")
    d = DistributedTrainer.__new__(DistributedTrainer)  # the sampling logic alone: no actors
    d.cfg, d.s, d.engine, d._ahead, d._stats, d._used = (
        build_config("toy-zerotir", overrides=ov),
        s,
        pool,
        {},
        {},
        [],
    )
    d.learner = SimpleNamespace(version=version)
    return d


def test_drop_regenerates_exactly_the_groups_over_the_bound_with_the_current_weights():
    pool = ScriptedPool([3, 5])  # the first job was sampled by version 3; the regeneration by 5
    d = driver(1, pool, version=5)
    rows = [{"problem": "a"}, {"problem": "b"}]
    trajs = d._sample(rows, seed=11, timings={})
    assert [t.meta["row"] for t in trajs] == ["a", "a", "b", "b"]  # the rows are kept, in order
    assert [t.meta["behaviour_version"] for t in trajs] == [5, 5, 5, 5]
    regen_rows, _, min_version = pool.jobs[1]
    assert [r["problem"] for r in regen_rows] == ["a", "a", "b", "b"] and min_version == 5
    assert d._stats["async/regenerated_groups"] == 2


def test_samples_within_the_bound_are_kept():
    pool = ScriptedPool([4])
    d = driver(1, pool, version=5)
    trajs = d._sample([{"problem": "a"}], seed=1, timings={})
    assert [t.meta["behaviour_version"] for t in trajs] == [4, 4] and len(pool.jobs) == 1


def test_the_lookahead_cursor_serves_reserved_rows_in_order_and_saves_the_first_untrained_position():
    c = LookaheadCursor(DataCursor([{"i": i} for i in range(10)], seed=0, shuffle=False))
    step0, step1 = c.reserve(2), c.reserve(2)
    assert c.pos == 0
    c.serve = True
    assert c.take(2) == step0 and c.pos == 2
    assert c.take(1) == [{"i": 4}]  # a refill round draws fresh rows, not the next step's
    c.serve = True
    assert c.take(2) == step1 and c.pos == 5


def wrap_marker(sandbox):
    sandbox.wrapped = True
    return sandbox


def test_workers_spread_over_sandbox_urls_round_robin_and_apply_the_wrapper(monkeypatch):
    from zerotir.distributed.actors import worker_sandbox
    from zerotir.sandbox.client import HttpSandbox

    monkeypatch.setattr(HttpSandbox, "check_reachable", lambda self, timeout_s=None: None)  # no servers here

    urls = "[http://127.0.0.1:9001,http://127.0.0.1:9002]"
    cfg = build_config("toy-zerotir", overrides=[f"distributed.sandbox_urls={urls}",
                                                 "distributed.sandbox_wrapper=test_driver_logic:wrap_marker"])  # fmt: skip
    got = [worker_sandbox(cfg, i) for i in range(3)]
    assert [s.url for s in got] == ["http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9001"]
    assert all(s.wrapped for s in got)
    for s in got:
        s.close()
