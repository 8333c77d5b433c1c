"""Placement groups for the two layouts: which bundle holds which actor, and what each asks for.

`disaggregated`: one bundle per actor (learner ranks first, then rollout workers), each with that
actor's CPUs and GPUs, so rollout and training never share a device. `colocated`: bundle k holds
learner rank k and rollout worker k and is as large as the larger of the two; they split its
devices in proportion to what each role asks (a learner and a worker that both ask 1 GPU get 0.5 of
the bundle's one GPU each), the setting where generation and training take turns on one device.
Both are PACK groups: Ray keeps the bundles on as few nodes as fit them. `plan` is plain arithmetic
(tested without Ray); `Placement` creates the group and hands out scheduling options.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from zerotir.config import DistributedConfig, Layout

MIN_CPU = 0.01
"""Ray refuses an all-zero bundle: a bundle whose actors ask no CPU reserves this much."""


@dataclass(frozen=True)
class Slot:
    bundle: int
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Plan:
    bundles: list[dict[str, float]]
    learners: list[Slot]
    workers: list[Slot]


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": max(cpus, MIN_CPU), **({"GPU": gpus} if gpus > 0 else {})}


def plan(d: DistributedConfig) -> Plan:
    L, R = d.learners, d.rollout_workers
    lc, lg, rc, rg = d.learner_cpus, d.learner_gpus, d.rollout_cpus, d.rollout_gpus
    if d.layout == Layout.DISAGGREGATED:
        bundles = [_bundle(lc, lg) for _ in range(L)] + [_bundle(rc, rg) for _ in range(R)]
        return Plan(bundles, [Slot(k, lc, lg) for k in range(L)], [Slot(L + j, rc, rg) for j in range(R)])
    bundles, learners, workers = [], [], []
    for k in range(max(L, R)):
        has_l, has_r = k < L, k < R
        gpus = max(lg if has_l else 0.0, rg if has_r else 0.0)
        asked = (lg if has_l else 0.0) + (rg if has_r else 0.0)
        scale = gpus / asked if asked > 0 else 0.0  # the bundle's devices, split in proportion
        bundles.append(_bundle((lc if has_l else 0.0) + (rc if has_r else 0.0), gpus))
        if has_l:
            learners.append(Slot(k, lc, lg * scale))
        if has_r:
            workers.append(Slot(k, rc, rg * scale))
    return Plan(bundles, learners, workers)


def local_num_cpus(d: DistributedConfig, cpu_count: int) -> int:
    """Logical CPUs for a local Ray instance: `distributed.num_cpus` when set, else the machine's count
    raised to what the placement group asks for. Ray's CPUs are bookkeeping, not pinning, so on a
    2-core laptop `rollout_workers=2 learners=2` (4 CPUs asked) runs, oversubscribed, instead of
    waiting for a placement that can never fit."""
    if d.num_cpus:
        return d.num_cpus
    asked = sum(b["CPU"] for b in plan(d).bundles)
    return max(cpu_count, math.ceil(asked - 1e-9))


class Placement:
    """The run's placement group, created (and waited for) up front."""

    def __init__(self, d: DistributedConfig):
        self.plan = plan(d)
        self.group: PlacementGroup = placement_group(self.plan.bundles, strategy="PACK")
        ready, _ = ray.wait([self.group.ready()], timeout=d.placement_timeout_s)
        if not ready:
            remove_placement_group(self.group)
            raise RuntimeError(
                f"the cluster cannot place {self.plan.bundles} ({d.layout} layout) within "
                f"{d.placement_timeout_s:.0f} s: it has {ray.cluster_resources()}; lower "
                "distributed.rollout_cpus / learner_cpus / *_gpus (0 lets actors share a small machine), "
                "raise distributed.num_cpus for a local instance, or add nodes"
            )

    def _options(self, slot: Slot) -> dict:
        strategy = PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=slot.bundle)
        return {"num_cpus": slot.cpus, "num_gpus": slot.gpus, "scheduling_strategy": strategy}

    def learner(self, rank: int) -> dict:
        """`.options(...)` for learner rank `rank`."""
        return self._options(self.plan.learners[rank])

    def worker(self, index: int) -> dict:
        """`.options(...)` for rollout worker `index` (its replacement goes to the same bundle)."""
        return self._options(self.plan.workers[index])

    def remove(self) -> None:
        remove_placement_group(self.group)


_BUNDLE_RESOURCE = re.compile(r"_group_(\d+)_([0-9a-f]+)$")


def _where(_self) -> tuple[str | None, list[int]]:
    ctx = ray.get_runtime_context()
    raw = ctx.worker.core_worker.resource_ids()  # the bundle-indexed names Ray reserved for us
    found = {int(m.group(1)) for k in raw if (m := _BUNDLE_RESOURCE.search(k))}
    return ctx.get_placement_group_id(), sorted(found)


def where(actor) -> tuple[str | None, list[int]]:
    """(placement group id, bundle indices) the actor was scheduled into, read in the actor."""
    return ray.get(actor.__ray_call__.remote(_where))
