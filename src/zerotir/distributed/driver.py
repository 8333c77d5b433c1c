"""The Ray driver: the single-process orchestrator (`train.trainer.Trainer`) with its learner and
engine replaced by proxies of Ray actors, plus a bounded-staleness pipeline.

What the driver keeps from the orchestrator, unchanged: the data cursor, scoring, group filters,
overlong shaping, advantages, logging, evaluation schedule and checkpoints. What changes:
- `_build_models` starts one `LearnerHost` actor (or `learners` FSDP2 ranks, distributed/sharding.py)
  and `rollout_workers` `RolloutWorker` actors, all in one placement group (distributed/placement.py);
  `learner.state_dict()` is an object-store reference with its version (a full state dict), and the
  orchestrator's `engine.load_weights(...)` broadcasts it to every worker. With
  `weight_transport=collective` no state dict is put in the object store: `load_weights` starts a
  torch.distributed broadcast from learner rank 0 to the workers (distributed/collective.py).
- `score` grades in a process pool (distributed/grading.py): a stuck grader never stalls the driver.
- `_sample` sends a step's prompt groups to the workers as jobs. With `max_staleness = s > 0` the
  jobs of the next s steps are submitted ahead (their rows reserved from the cursor), so rollouts
  run while the learner trains; samples over the bound are regenerated (`on_stale=drop`) or never
  start on weights older than the newest broadcast (`on_stale=wait`).
- A worker that dies is replaced, given the newest weights, and its jobs are resubmitted: each job's
  result is taken exactly once, so nothing is lost or counted twice.
With s = 0 and one worker the driver computes what the single-process trainer computes (a test).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.exceptions import RayActorError

from zerotir.config import RunConfig
from zerotir.distributed.actors import Job, JobResult, LearnerHost, RolloutWorker
from zerotir.distributed.collective import CollectiveBroadcast
from zerotir.distributed.grading import DriverGrader
from zerotir.distributed.placement import Placement, local_num_cpus
from zerotir.distributed.sharding import ShardedLearnerHost, assemble_logprobs, combine_metrics
from zerotir.distributed.staleness import stale_groups, staleness_metrics
from zerotir.models import load_tokenizer
from zerotir.rollout.engine import EngineCapabilities
from zerotir.task import RewardFn
from zerotir.train.trainer import Trainer
from zerotir.train.trainer import train as fit_trainer
from zerotir.types import Trajectory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionedWeights:
    version: int
    ref: ray.ObjectRef | None
    """The policy's state dict in the object store (read by every worker, copied once per node);
    None with the collective transport (the learner still holds the weights and sends them itself)."""


class _RemotePolicy:
    """What a checkpoint asks of the policy: its weights written by the learner's node (rank 0 of a
    sharded group, after every rank gathered its shards)."""

    def __init__(self, actors):
        self.actors = actors

    def save_pretrained(self, path, **kw) -> None:
        _get([a.save_pretrained.remote(str(path), **kw) for a in self.actors])


class LearnerLost(RuntimeError):
    """The learner actor died: its optimizer state is gone, so the run continues from a checkpoint."""


def _get(ref):
    try:
        return ray.get(ref)
    except RayActorError as e:
        raise LearnerLost(
            f"the learner actor died ({e.__class__.__name__}); continue from the newest checkpoint with "
            "`zerotir train --resume RUN_DIR` (trainer.save_every sets how much is redone)"
        ) from e


class LearnerProxy:
    """The orchestrator's `Learner` interface, forwarded to the learner actor."""

    def __init__(self, actor, collective: bool = False):
        self.actor, self.version, self.policy = actor, 0, _RemotePolicy([actor])
        self.actors = [actor]
        self.collective = collective

    def prepare(self, trajs: list[Trajectory], recompute: bool):
        return _get(self.actor.prepare.remote(trajs, recompute))

    def train_on_batch(self, lb, adv) -> dict[str, float]:
        metrics = _get(self.actor.train_on_batch.remote(lb, adv))
        self.version += 1
        return metrics

    def state_dict(self) -> VersionedWeights:
        if self.collective:
            return VersionedWeights(self.version, None)
        return VersionedWeights(self.version, self.actor.state_dict.remote())

    def checkpoint_parts(self) -> dict[str, object]:
        return _get(self.actor.checkpoint_parts.remote())

    def load_checkpoint_parts(self, load) -> None:
        self.version = _get(self.actor.load_checkpoint_parts.remote(load))

    @property
    def last_train_logprobs(self):
        return _get(self.actor.last_train_logprobs.remote())


class ShardedLearnerProxy(LearnerProxy):
    """The `Learner` interface over a group of FSDP2 ranks (distributed/sharding.py): every call goes
    to every rank (they run collectives together, in the order the driver sends them); the answer is
    rank 0's, or, for an update, the ranks' metrics recombined."""

    def __init__(self, actors, collective: bool = False):
        super().__init__(actors[0], collective)
        self.actors, self.policy = actors, _RemotePolicy(actors)
        self._last = None
        self._pending: list[ray.ObjectRef] = []  # other ranks' halves of a state-dict gather

    def _all(self, method: str, *args):
        return _get([getattr(a, method).remote(*args) for a in self.actors])

    def prepare(self, trajs: list[Trajectory], recompute: bool):
        return self._all("prepare", ray.put(trajs), recompute)[0]

    def train_on_batch(self, lb, adv) -> dict[str, float]:
        parts = self._all("train_on_batch", ray.put(lb), ray.put(adv))
        self._last = assemble_logprobs([(rows, lp) for _, rows, lp in parts], lb.tokens.action_mask.shape)
        self.version += 1
        return combine_metrics([m for m, _, _ in parts])

    def state_dict(self) -> VersionedWeights:
        if self.collective:
            return VersionedWeights(self.version, None)
        refs = [a.state_dict.remote() for a in self.actors]
        self._pending = refs[1:]  # kept until the next call: every rank must take part in the gather
        return VersionedWeights(self.version, refs[0])

    def checkpoint_parts(self) -> dict[str, object]:
        return self._all("checkpoint_parts")[0]

    def load_checkpoint_parts(self, load) -> None:
        self.version = self._all("load_checkpoint_parts", load)[0]

    @property
    def last_train_logprobs(self):
        return self._last


def start_learners(cfg: RunConfig, model_src: str, placement: Placement) -> LearnerProxy:
    """One `LearnerHost`, or `distributed.learners` FSDP2 ranks joined into one process group."""
    d, conf = cfg.distributed, cfg.model_dump(mode="json")
    collective = d.weight_transport == "collective"
    if d.learners == 1:
        host = ray.remote(LearnerHost).options(**placement.learner(0))
        return LearnerProxy(host.remote(conf, model_src), collective)
    actors = [
        ray.remote(ShardedLearnerHost).options(**placement.learner(r)).remote(conf, model_src, r, d.learners)
        for r in range(d.learners)
    ]
    address, port = _get(actors[0].endpoint.remote())
    _get([a.setup.remote(address, port) for a in actors])
    return ShardedLearnerProxy(actors, collective)


class RolloutPool:
    """The orchestrator's engine: jobs to workers, weights to all of them, dead workers replaced.
    `learners`: the learner actors, needed by the collective transport (they send the weights)."""

    def __init__(self, cfg: RunConfig, model_src: str, tokenizer, placement: Placement, learners=None):
        self.cfg, self.model_src, self.tokenizer, self.placement = cfg, model_src, tokenizer, placement
        self.capabilities = EngineCapabilities(exact_logprobs=cfg.rollout.engine == "hf")
        self.workers = [self._spawn(i) for i in range(cfg.distributed.rollout_workers)]
        self.collective: CollectiveBroadcast | None = None
        if cfg.distributed.weight_transport == "collective":
            if not learners:
                raise ValueError("distributed.weight_transport=collective needs the learner actors")
            self.collective = CollectiveBroadcast(cfg, learners)
            self.collective.build(self.workers)
        self.inflight: dict[int, tuple[int, ray.ObjectRef, Job]] = {}
        self.weights: VersionedWeights | None = None
        self.restarts = 0
        self._ids = itertools.count()

    def _spawn(self, i: int):
        actor = ray.remote(RolloutWorker).options(max_concurrency=4, **self.placement.worker(i))
        return actor.remote(self.cfg.model_dump(mode="json"), i, self.model_src)

    def pids(self) -> list[int]:
        return ray.get([w.pid.remote() for w in self.workers])

    def load_weights(self, w: VersionedWeights, version: int | None = None) -> None:
        """Broadcast; a synchronous run waits until every worker holds them, an asynchronous one not.
        (`w` carries its version; `version` is the protocol's and equals it.)"""
        self.weights = w
        if self.collective is not None:
            acks = self.collective.broadcast(self.workers)
        else:
            acks = [wk.set_weights.remote(w.version, w.ref) for wk in self.workers]
        if self.cfg.distributed.max_staleness == 0:
            ray.get(acks)

    def submit(self, rows: list[dict], seed: int, min_version: int | None) -> int:
        job = Job(next(self._ids), rows, seed, min_version)
        self._send(job, min(range(len(self.workers)), key=self._load))
        return job.job_id

    def _load(self, i: int) -> int:
        return sum(1 for w, _, _ in self.inflight.values() if w == i)

    def _send(self, job: Job, i: int) -> None:
        self.inflight[job.job_id] = (i, self.workers[i].rollout.remote(job), job)

    def _replace(self, i: int) -> None:
        self.restarts += 1
        if self.restarts > self.cfg.distributed.max_worker_restarts:
            raise RuntimeError(
                f"rollout workers died {self.restarts} times (distributed.max_worker_restarts)"
            )
        log.warning("rollout worker %d died: restarting it and re-queuing its jobs", i)
        ray.kill(self.workers[i], no_restart=True)
        self.workers[i] = self._spawn(i)
        if self.collective is not None:  # a group's members are fixed: rebuild it, then resend
            self.collective.build(self.workers)
            if self.weights is not None:
                ray.get(self.collective.broadcast(self.workers))
        elif self.weights is not None:
            ray.get(self.workers[i].set_weights.remote(self.weights.version, self.weights.ref))
        for w, _, job in list(self.inflight.values()):
            if w == i:
                self._send(job, i)

    def wait(self, job_ids: list[int]) -> list[JobResult]:
        """The results of `job_ids`, in that order (blocking)."""
        done: dict[int, JobResult] = {}
        while len(done) < len(job_ids):
            refs = {self.inflight[j][1]: j for j in job_ids if j not in done}
            ready, _ = ray.wait(list(refs), num_returns=1)
            jid = refs[ready[0]]
            try:
                res = ray.get(ready[0])
            except RayActorError:
                self._replace(self.inflight[jid][0])
                continue
            del self.inflight[jid]
            done[jid] = res
        return [done[j] for j in job_ids]

    def evaluate(self, max_tool_calls: int | None = None) -> dict[str, float]:
        return ray.get(self.workers[0].evaluate.remote(max_tool_calls))

    def close(self) -> None:
        for w in self.workers:
            try:
                ray.get(w.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead worker has nothing left to close
                pass
            ray.kill(w, no_restart=True)


class LookaheadCursor:
    """The data cursor with rows reserved ahead for prefetched steps. `pos` (what a checkpoint saves)
    is the first row not yet trained on, so a resumed run regenerates the prefetched steps."""

    def __init__(self, inner):
        self.inner = inner
        self.blocks: deque[tuple[int, list[dict]]] = deque()
        self.serve = False

    def reserve(self, n: int) -> list[dict]:
        start = self.inner.pos
        rows = self.inner.take(n)
        self.blocks.append((start, rows))
        return rows

    def take(self, n: int) -> list[dict]:
        if self.serve and self.blocks:
            self.serve = False
            return self.blocks.popleft()[1]
        return self.inner.take(n)

    @property
    def pos(self) -> int:
        return self.blocks[0][0] if self.blocks else self.inner.pos


class DistributedTrainer(Trainer):
    models_in_process = False

    def __init__(
        self, cfg: RunConfig, run_dir: str | Path, resume: bool = False, reward_fn: RewardFn | None = None
    ):
        d = cfg.distributed
        if not ray.is_initialized():
            kw = {"num_cpus": local_num_cpus(d, os.cpu_count() or 1)} if d.address is None else {}
            ray.init(address=d.address, include_dashboard=False, ignore_reinit_error=True, **kw)
        self.s = d.max_staleness
        self._ahead: dict[int, list[int]] = {}  # seed -> job ids submitted ahead
        self._next_prefetch = 0
        self._stats: dict[str, float] = {}
        self._used: list[Trajectory] = []
        self.placement = Placement(d)
        super().__init__(cfg, run_dir, resume=resume, reward_fn=reward_fn)
        self.grader = DriverGrader(cfg, self.task, reward_fn)  # from the main thread (the pool's rule)
        if self.sandbox is not None:  # the workers execute code; the driver needs no pool
            self.sandbox.close()
            self.sandbox = None
        self.cursor = LookaheadCursor(self.cursor)  # type: ignore[assignment]
        self._next_prefetch = self.step

    def _build_models(self, model_src: str):
        learner = start_learners(self.cfg, model_src, self.placement)
        tokenizer = load_tokenizer(model_src)
        return learner, tokenizer, RolloutPool(self.cfg, model_src, tokenizer, self.placement, learner.actors)

    def score(self, trajs: list[Trajectory]) -> list[float]:
        """In the driver's grading processes: a stuck grader costs its response, not the run."""
        return self.grader.score(trajs)

    # ------------------------------------------------------------------ sampling on the workers
    def _jobs(self, rows: list[dict], seed: int, min_version: int | None) -> list[int]:
        """A batch of prompt groups split over the workers (one job each; one worker: one job, the
        single-process trainer's batch and seed)."""
        G, W = self.cfg.algo.group_size, len(self.engine.workers)
        per = -(-len(rows) // W)
        parts = [rows[k : k + per] for k in range(0, len(rows), per)]
        return [
            self.engine.submit([r for r in part for _ in range(G)], seed + 7_777 * k, min_version)
            for k, part in enumerate(parts)
        ]

    def _min_version(self) -> int | None:
        """`wait`: no job starts on weights older than the newest broadcast."""
        return self.learner.version if self.cfg.distributed.on_stale == "wait" else None

    def _gather(self, job_ids: list[int], timings: dict) -> list[Trajectory]:
        t0 = time.perf_counter()
        results = self.engine.wait(job_ids)
        self._add("time/learner_idle_s", time.perf_counter() - t0)
        trajs: list[Trajectory] = []
        for r in results:
            trajs += r.trajs
            self._add("time/rollout_idle_s", r.idle_s)
            for k, v in r.timings.items():
                timings[k] = timings.get(k, 0.0) + v
        return trajs

    def _sample(self, rows: list[dict], seed: int, timings: dict) -> list[Trajectory]:
        ids = self._ahead.pop(seed, None) or self._jobs(rows, seed, self.learner.version)
        trajs = self._gather(ids, timings)
        G, version = self.cfg.algo.group_size, self.learner.version
        stale = stale_groups(trajs, G, version, self.s)
        if stale:  # regenerate with the current weights: the rows are not lost, the stale samples are
            self._add("async/regenerated_groups", len(stale))
            fresh = self._gather(self._jobs([rows[g] for g in stale], seed + 1, version), timings)
            for k, g in enumerate(stale):
                trajs[g * G : (g + 1) * G] = fresh[k * G : (k + 1) * G]
        self._used += trajs
        return trajs

    def collect(self, step: int, timings: dict):
        P = self.cfg.trainer.prompts_per_step
        # the step's own rows first, then the next s steps' (reserved in order, so data order is kept)
        for k in range(max(self._next_prefetch, step), step + self.s + 1):
            self._ahead[self.round_seed(k, 0)] = self._jobs(self.cursor.reserve(P), self.round_seed(k, 0),
                                                            self._min_version())  # fmt: skip
        self._next_prefetch = max(self._next_prefetch, step + self.s + 1)
        self.cursor.serve = True
        return super().collect(step, timings)

    def _add(self, key: str, v: float) -> None:
        self._stats[key] = self._stats.get(key, 0.0) + v

    def train_step(self) -> dict[str, float]:
        self._stats = {"time/rollout_idle_s": 0.0, "time/learner_idle_s": 0.0}
        self._used = []
        version = self.learner.version
        metrics = super().train_step()
        metrics.update(self._stats)
        metrics.update(staleness_metrics(self._used, version, self.s))
        metrics["distributed/worker_restarts"] = float(self.engine.restarts)
        metrics.update(self.grader.metrics())
        metrics["distributed/policy_version"] = float(self.learner.version)
        return metrics

    def evaluate(self, max_tool_calls: int | None = None) -> dict[str, float]:
        return self.engine.evaluate(max_tool_calls) if self.eval_rows else {}

    def close(self) -> None:
        super().close()
        self.grader.close()
        self.engine.close()
        for a in self.learner.actors:
            ray.kill(a, no_restart=True)
        self.placement.remove()


def train(
    cfg: RunConfig, run_dir: str | Path, resume: bool = False, reward_fn: RewardFn | None = None
) -> Trainer:
    return fit_trainer(cfg, run_dir, resume, reward_fn, trainer_cls=DistributedTrainer)
