"""What runs inside the Ray actors: a rollout worker and the learner host. Plain classes (the driver
wraps them with `ray.remote`), so they import no Ray and can be exercised in one process.

A `RolloutWorker` owns an engine with its own copy of the policy, a sandbox (an in-process pool or a
service URL) and the task's tool. Weights arrive versioned (`set_weights`, from another thread while
a rollout runs); a job starts with the newest weights the worker holds, after waiting for at least
`min_version` when the driver asks it to (the staleness bound's `wait` mode). With partial rollouts
the engine decodes in chunks and picks up newer weights between chunks (distributed/chunked.py).
Every trajectory records which policy versions sampled its tokens (`meta["segments"]`).

With `distributed.weight_transport=collective` the weights arrive over a torch.distributed group
instead (distributed/transport.py): the learner's rank 0 sends, each worker receives into buffers
it allocated once and queues them exactly like object-store weights (`receive_weights`). Receives
run in the order the driver numbered them, whatever thread Ray picks, and never overwrite buffers
the rollout thread is loading from.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from zerotir import build
from zerotir.config import RunConfig
from zerotir.distributed.chunked import ChunkedEngine, VersionedSegments
from zerotir.distributed.transport import WeightGroup, free_endpoint
from zerotir.rollout import SamplingParams
from zerotir.task import sample_rows
from zerotir.types import Trajectory


@dataclass
class Job:
    """One worker call: `rows` already repeated `group_size` times, in group order."""

    job_id: int
    rows: list[dict]
    seed: int
    min_version: int | None = None
    """Wait until the worker holds at least this policy version (None: start at once)."""


@dataclass
class JobResult:
    job_id: int
    trajs: list[Trajectory]
    timings: dict[str, float] = field(default_factory=dict)
    idle_s: float = 0.0
    """Time the worker waited for this job's weights or for the job itself."""
    worker: int = 0


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load(cfg: RunConfig, model_src: str):
    """(policy copy, tokenizer); no HF copy for engines that load their own weights (vLLM)."""
    from zerotir.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_src)
    if cfg.rollout.engine != "hf":
        return None, tok
    return load_causal_lm(model_src, cfg.model.dtype, cfg.trainer.device).eval(), tok


def worker_sandbox(cfg: RunConfig, index: int):
    """Worker `index`'s sandbox: the i-th of `distributed.sandbox_urls` round robin, else as configured;
    wrapped by `distributed.sandbox_wrapper` when one is named."""
    d = cfg.distributed
    if d.sandbox_urls:
        url = d.sandbox_urls[index % len(d.sandbox_urls)]
        cfg = cfg.model_copy(update={"sandbox": cfg.sandbox.model_copy(update={"mode": "http", "url": url})})
    sandbox = build.make_sandbox(cfg)
    if sandbox is not None and d.sandbox_wrapper:
        from zerotir.task import load_reward as load_callable  # same `module:function` resolution

        sandbox = load_callable(d.sandbox_wrapper)(sandbox)
    return sandbox


class RolloutWorker:
    def __init__(self, cfg: dict, index: int, model_src: str):
        self.cfg = RunConfig.model_validate(cfg)
        self.index = index
        build.apply_runtime(self.cfg)
        policy, self.tokenizer = _load(self.cfg, model_src)
        self.base_engine = build.make_engine(self.cfg, policy, self.tokenizer)
        self.task = build.make_task(self.cfg, self.tokenizer)
        self.tool, self.tool_cfg = build.make_tool(self.cfg), build.tool_loop_config(self.cfg)
        self.sandbox = worker_sandbox(self.cfg, index)
        self.eval_rows = build.load_rows(self.cfg, "eval")
        self.version = 0
        self._pending: tuple[int, dict] | None = None
        self._cv = threading.Condition()
        self._job_lock = threading.Lock()  # one rollout at a time; weights may arrive meanwhile
        self._group: WeightGroup | None = None  # collective transport: this worker's membership
        self._buf_lock = threading.Lock()  # held while the group's buffers are written or loaded
        self._turn = threading.Condition()  # receives in the driver's order: (generation, seq)
        self._gen, self._seq = 0, 0
        self._last_end = time.perf_counter()
        d = self.cfg.distributed
        self.engine = (
            ChunkedEngine(self.base_engine, d.chunk_tokens, self._refresh)
            if d.partial_rollouts
            else self.base_engine
        )

    def pid(self) -> int:
        return os.getpid()

    def set_weights(self, version: int, state_dict: dict) -> int:
        """Queue weights `version`; they are loaded at the next job or chunk boundary."""
        with self._cv:
            if self._pending is None or version > self._pending[0]:
                self._pending = (version, state_dict)
            self._cv.notify_all()
        return version

    def join_weight_group(
        self, gen: int, host: str, port: int, world: int, rank: int, backend: str, timeout_s: float
    ) -> int:
        """Leave the previous weight group (if any) and join generation `gen` as `rank`; returns
        when every member has joined. Its receive buffers come with its first broadcast."""
        with self._turn:
            old, self._group = self._group, None
            self._gen, self._seq = gen, 0
            self._turn.notify_all()
        if old is not None:
            old.close()
        self._group = WeightGroup(host, port, world, rank, backend, timeout_s)
        return rank

    def receive_weights(self, gen: int, seq: int) -> int:
        """Take broadcast `seq` of group generation `gen` into the group's buffers and queue them
        like `set_weights`. Returns the version received (-1: the group was replaced meanwhile)."""
        with self._turn:
            self._turn.wait_for(lambda: self._gen != gen or self._seq == seq - 1)
            if self._gen != gen or self._group is None:
                return -1
            group = self._group
        try:
            with self._buf_lock:
                with self._cv:  # queued buffers are about to be overwritten: they no longer hold that version
                    if self._pending is not None and self._pending[1] is group.buffers:
                        self._pending = None
                version = group.receive()
                with self._cv:
                    self._pending = (version, group.buffers)
                    self._cv.notify_all()
            return version
        finally:
            with self._turn:
                if self._gen == gen:
                    self._seq = seq
                    self._turn.notify_all()

    def _refresh(self) -> int:
        """Load the newest queued weights (rollout thread only); returns the version now held."""
        with self._buf_lock:
            with self._cv:
                pending, self._pending = self._pending, None
            if pending is not None and pending[0] > self.version:
                self.base_engine.load_weights(pending[1], pending[0])
                self.version = pending[0]
        return self.version

    def _newest_version(self) -> int:
        return max(self.version, self._pending[0] if self._pending else -1)

    def rollout(self, job: Job) -> JobResult:
        with self._job_lock:
            t0 = time.perf_counter()
            idle = t0 - self._last_end
            if job.min_version is not None:
                with self._cv:
                    self._cv.wait_for(lambda: self._newest_version() >= job.min_version, timeout=600)
            self._refresh()
            idle += time.perf_counter() - t0
            r = self.cfg.rollout
            params = SamplingParams(r.temperature, r.top_p, r.max_response_len, job.seed)
            timings: dict[str, float] = {}
            segments = VersionedSegments(self.version)
            if isinstance(self.engine, ChunkedEngine):
                self.engine.log = segments
            trajs = sample_rows(
                self.task, self.engine, self.sandbox, job.rows, self.tool_cfg, params, timings, self.tool
            )
            for tr in trajs:
                tr.meta["segments"] = segments.of(tr)
                tr.meta["behaviour_version"] = min((v for v, _ in tr.meta["segments"]), default=self.version)
                tr.meta["worker"] = self.index
            self._last_end = time.perf_counter()
            return JobResult(job.job_id, trajs, timings, idle, self.index)

    def evaluate(self, max_tool_calls: int | None = None) -> dict[str, float]:
        """The orchestrator's evaluation on this worker's engine and sandbox (it reads only the
        cfg, engine, sandbox, task, tool and eval_rows that a worker has)."""
        from zerotir.distributed.grading import DriverGrader
        from zerotir.train.trainer import Trainer

        self._refresh()
        # This runs in one of the actor's threads (max_concurrency > 1), where math-verify's signal-based
        # timeouts do nothing: one pathological answer held the whole evaluation. A grading pool of
        # the call's own (started and closed by this thread, see reward/pool.py) bounds every answer.
        grader = DriverGrader(self.cfg, self.task)
        try:
            score = partial(grader.score, grade_excluded=True)  # as the single-process evaluation grades
            return Trainer.evaluate(self, max_tool_calls, score=score)  # type: ignore[arg-type]
        finally:
            grader.close()

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
        if self._group is not None:
            self._group.close()


class WeightSource:
    """The sending side of the collective transport, for a learner host: rank 0 of the learner group
    joins the weight group (`join_weight_group`) and sends; `broadcast_weights` runs on every learner
    rank (a sharded learner gathers the full state dict collectively first)."""

    _weight_group: WeightGroup | None = None

    def weight_endpoint(self) -> tuple[str, int]:
        """Where the weight group's store listens: this node and a free port."""
        return free_endpoint()

    def join_weight_group(self, host: str, port: int, world: int, backend: str, timeout_s: float) -> int:
        if self._weight_group is not None:
            self._weight_group.close()
        dev = torch.device(self.cfg.trainer.device)  # type: ignore[attr-defined]
        if backend == "nccl" and dev.index is not None:  # else the current device (Ray's first visible GPU)
            torch.cuda.set_device(dev)
        self._weight_group = WeightGroup(host, port, world, 0, backend, timeout_s)
        return 0

    def _broadcast_source(self) -> tuple[dict[str, torch.Tensor], int, bool]:
        """(full state dict, its version, whether this rank sends)."""
        raise NotImplementedError

    def broadcast_weights(self) -> dict[str, float]:
        """Send the current policy over the weight group (rank 0); what it cost."""
        t0 = time.perf_counter()
        sd, version, sends = self._broadcast_source()
        if not sends:
            return {"version": float(version), "bytes": 0.0, "seconds": time.perf_counter() - t0}
        if self._weight_group is None:
            raise RuntimeError("broadcast_weights before join_weight_group")
        nbytes = self._weight_group.send({k: v.detach() for k, v in sd.items()}, version)
        return {"version": float(version), "bytes": float(nbytes), "seconds": time.perf_counter() - t0}


class LearnerHost(WeightSource):
    """The `Learner` in its own process, seeded like the single-process trainer before it is built
    (the critic's head draws from the RNG). `off_policy` is applied to every update."""

    def __init__(self, cfg: dict, model_src: str):
        from zerotir.distributed.correction import CorrectedLearner

        self.cfg = RunConfig.model_validate(cfg)
        build.apply_runtime(self.cfg)
        _seed_all(self.cfg.trainer.seed)
        learner, self.tokenizer = build.build_learner(self.cfg, model_src)
        d = self.cfg.distributed
        self.learner = CorrectedLearner(learner, d.off_policy or "on_policy", d.is_cap)

    def pid(self) -> int:
        return os.getpid()

    def prepare(self, trajs: list[Trajectory], recompute: bool):
        return self.learner.prepare(trajs, recompute)

    def train_on_batch(self, lb, adv) -> dict[str, float]:
        return self.learner.train_on_batch(lb, adv)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.learner.state_dict().items()}

    def _broadcast_source(self) -> tuple[dict[str, torch.Tensor], int, bool]:
        return self.learner.state_dict(), self.learner.version, True

    def checkpoint_parts(self) -> dict[str, object]:
        return self.learner.checkpoint_parts()

    def load_checkpoint_parts(self, load) -> int:
        """`load(name)` runs here: the checkpoint directory must be readable from the learner's node.
        Returns the restored policy version."""
        self.learner.load_checkpoint_parts(load)
        return self.learner.version

    def last_train_logprobs(self) -> torch.Tensor:
        """The last update's epoch-0 logprobs (what the rollout inspector records)."""
        return self.learner.last_train_logprobs

    def save_pretrained(self, path: str, **kw) -> None:
        """The policy's weights, written by the learner's node (shared storage on a cluster)."""
        self.learner.policy.save_pretrained(path, **kw)
