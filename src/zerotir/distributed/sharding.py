"""Sharded learners: the unchanged `Learner` on every rank of a torch.distributed group, its policy
sharded with FSDP2 (`fully_shard`; NCCL on GPUs, gloo on CPU). No Ray here: the driver starts one
`ShardedLearnerHost` per rank as an actor and calls every rank for every step.

One update on W ranks equals one learner's update on the whole batch (a test, to float rounding):
- every rank receives the whole batch (and runs `prepare` on it: the recomputation is a forward of
  the sharded policy, so all ranks must run it), then trains on its share of the rows;
- the Learner weights its micro-batches against the *local* batch (tokens n_r of N, rows B_r of B),
  so the gradient that leaves each rank's logits is scaled by W·n_r/N (token-mean) or W·B_r/B (the
  per-sequence aggregations); FSDP's reduce-scatter averages over the W ranks, which gives the
  full-batch gradient. Clipping then sees the global norm (the gradients are DTensors).
- FSDP all-gathers in every forward, so all ranks must run the same number of micro-batches and
  none may be skipped (the Learner skips one without model tokens): `plan_shards` picks per-rank
  micro-batch sizes and deals the rows with model tokens so that every micro-batch has some.
- Metrics are the ranks' local values, recombined by the driver with the same weights
  (`combine_metrics`).
The per-token aggregation is exact for `token-mean` (the default). For the per-sequence aggregations
the loss is exact too, but an entropy or KL term in the loss is a token mean per micro-batch in the
Learner itself, so it depends on how rows fall into micro-batches (on one learner as well).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zerotir.config import RunConfig
from zerotir.distributed.actors import WeightSource
from zerotir.distributed.transport import free_endpoint
from zerotir.train.learner import Advantages, LearnerBatch, lr_lambda
from zerotir.types import Trajectory

MAX_KEYS = frozenset({"train/ratio_max", "train/mismatch_max_abs"})
"""Metrics the Learner takes the max of over micro-batches: the max over ranks."""
TOKEN_KEYS = frozenset({"train/mismatch_kl", "train/adv_abs_mean"})
"""Metrics weighted by token share (whatever the loss aggregation)."""
AGG_KEYS = frozenset({"train/policy_loss", "train/entropy", "train/clip_ratio", "train/kl"})
"""Metrics weighted like the loss (token share for token-mean, row share otherwise). Every other key
(grad norm, LR, importance-weight statistics of the whole batch) is the same on every rank."""


@dataclass(frozen=True)
class Shard:
    rows: list[int]
    """Rows of the full batch this rank trains on, in its micro-batch order."""
    micro: int
    """Its micro-batch size (at most trainer.micro_batch_size when the batch allows it)."""


def _chunks(size: int, k: int) -> int | None:
    """A micro-batch size that cuts `size` rows into exactly `k` micro-batches, or None."""
    if size < k:
        return None
    m = -(-size // k)
    return m if -(-size // m) == k else None


def plan_shards(has_tokens: list[bool], world: int, micro: int) -> list[Shard]:
    """Split a batch over `world` ranks so that every rank runs the same number of micro-batches and
    each micro-batch holds a row with model tokens. Deterministic: every rank computes the same plan."""
    B = len(has_tokens)
    live = [i for i, t in enumerate(has_tokens) if t]
    if len(live) < world:
        raise ValueError(
            f"a batch with {len(live)} trajectories that have model tokens cannot be split over "
            f"distributed.learners={world} (each rank needs one)"
        )
    sizes = [B // world + (r < B % world) for r in range(world)]
    fits = lambda k: all(_chunks(s, k) for s in sizes) and world * k <= len(live)  # noqa: E731
    k_min = -(-max(sizes) // micro)
    ks = [k for k in range(k_min, min(sizes) + 1) if fits(k)] or [
        k for k in range(k_min - 1, 0, -1) if fits(k)
    ]
    k = ks[0] if ks else 1  # k = 1 always fits: one micro-batch per rank
    slots = [[_chunks(s, k) or s] for s in sizes]  # per rank: its micro-batch size
    # capacities of the world * k micro-batches, in (rank, chunk) order
    caps = [min(slots[r][0], sizes[r] - j * slots[r][0]) for r in range(world) for j in range(k)]
    chunks: list[list[int]] = [[] for _ in caps]
    order = live + [i for i, t in enumerate(has_tokens) if not t]
    c = 0
    for i in order:  # deal round robin over chunks with room left: live rows first, one per chunk
        while len(chunks[c]) >= caps[c]:
            c = (c + 1) % len(chunks)
        chunks[c].append(i)
        c = (c + 1) % len(chunks)
    return [Shard([i for j in range(k) for i in chunks[r * k + j]], slots[r][0]) for r in range(world)]


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale: float):  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad * ctx.scale, None


def batch_rows(lb: LearnerBatch, adv: Advantages, rows: list[int]) -> tuple[LearnerBatch, Advantages]:
    idx = torch.as_tensor(rows, dtype=torch.long)
    pick = lambda t: None if t is None else t[idx]  # noqa: E731
    local = LearnerBatch(
        lb.tokens.select(idx), lb.rewards[idx], pick(lb.ref_logprobs), pick(lb.kl), pick(lb.values)
    )
    return local, Advantages(adv.advantages[idx], pick(adv.returns))


def combine_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """The ranks' metrics as one learner would have reported them (weights in `shard/*` keys)."""
    out: dict[str, float] = {}
    for key in per_rank[0]:
        if key.startswith("shard/"):
            continue
        vals = [m.get(key, 0.0) for m in per_rank]
        if key in MAX_KEYS:
            out[key] = max(vals)
        elif key in TOKEN_KEYS or key in AGG_KEYS:
            w = "shard/token_weight" if key in TOKEN_KEYS else "shard/agg_weight"
            out[key] = sum(v * m[w] for v, m in zip(vals, per_rank))
        else:
            out[key] = vals[0]
    return out


class ShardedLearner:
    """One rank's `Learner` (policy sharded): `train_on_batch` takes the whole batch and trains this
    rank's rows with its gradient share. Everything else is the learner's own."""

    def __init__(self, learner, rank: int, world: int, loss_agg: str):
        self.inner, self.rank, self.world, self.loss_agg = learner, rank, world, loss_agg
        self._scale: float | None = None
        self.rows: list[int] = []
        learner.policy.register_forward_hook(self._scale_logits)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _scale_logits(self, module, args, out):
        if self._scale is not None and torch.is_grad_enabled():
            out.logits = _ScaleGrad.apply(out.logits, self._scale)
        return out

    def prepare(self, trajs: list[Trajectory], recompute: bool) -> LearnerBatch:
        return self.inner.prepare(trajs, recompute)

    def train_on_batch(self, lb: LearnerBatch, adv: Advantages) -> dict[str, float]:
        mask = lb.tokens.action_mask
        t = self.inner.cfg
        shard = plan_shards((mask.sum(1) > 0).tolist(), self.world, t.micro_batch_size)[self.rank]
        self.rows = shard.rows
        local, local_adv = batch_rows(lb, adv, shard.rows)
        token_w = float(local.tokens.action_mask.sum() / mask.sum().clamp(min=1.0))
        agg_w = token_w if self.loss_agg == "token-mean" else len(shard.rows) / mask.size(0)
        self._scale, self.inner.cfg = (
            self.world * agg_w,
            t.model_copy(update={"micro_batch_size": shard.micro}),
        )
        try:
            metrics = self.inner.train_on_batch(local, local_adv)
        finally:
            self._scale, self.inner.cfg = None, t
        return {**metrics, "shard/token_weight": token_w, "shard/agg_weight": agg_w}


class ShardedLearnerHost(WeightSource):
    """Rank `rank` of `world` learner processes. `setup(address, port)` on every rank at once joins
    the process group, builds the learner (seeded like the single-process trainer), shards the policy
    with FSDP2 and rebuilds the optimizer over the sharded parameters. The driver calls every rank
    for each collective method (prepare, train, state dicts, checkpoints) and reads rank 0's answer."""

    def __init__(self, cfg: dict, model_src: str, rank: int, world: int):
        self.cfg = RunConfig.model_validate(cfg)
        self.model_src, self.rank, self.world = model_src, rank, world
        if self.cfg.trainer.threads:
            torch.set_num_threads(self.cfg.trainer.threads)

    def pid(self) -> int:
        return os.getpid()

    def endpoint(self) -> tuple[str, int]:
        return free_endpoint()

    def setup(self, address: str, port: int) -> int:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        from zerotir import build
        from zerotir.distributed.correction import CorrectedLearner

        t = self.cfg.trainer
        cuda = t.device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(torch.device(t.device))
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            init_method=f"tcp://{address}:{port}",
            rank=self.rank,
            world_size=self.world,
        )
        seed = t.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        learner, self.tokenizer = build.build_learner(self.cfg, self.model_src)
        if learner.critic is not None:
            raise ValueError("distributed.learners > 1 with a critic (algo.name=ppo) is not implemented")
        policy = learner.policy
        self.arch = type(policy).__name__
        mesh = init_device_mesh("cuda" if cuda else "cpu", (self.world,))
        for layer in policy.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(policy, mesh=mesh)
        # the optimizer must hold the sharded parameters (fully_shard replaced them)
        learner.opt = torch.optim.AdamW(policy.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        learner.sched = torch.optim.lr_scheduler.LambdaLR(learner.opt, lr_lambda(t))
        self.sharded = ShardedLearner(learner, self.rank, self.world, self.cfg.algo.loss_agg)
        d = self.cfg.distributed
        self.learner = CorrectedLearner(self.sharded, d.off_policy or "on_policy", d.is_cap)  # type: ignore[arg-type]
        return self.rank

    def prepare(self, trajs: list[Trajectory], recompute: bool):
        return self.learner.prepare(trajs, recompute)

    def train_on_batch(self, lb, adv) -> tuple[dict[str, float], list[int], torch.Tensor]:
        """(local metrics with their weights, this rank's rows, their epoch-0 logprobs)."""
        metrics = self.learner.train_on_batch(lb, adv)
        return metrics, self.sharded.rows, self.sharded.inner.last_train_logprobs

    def _full(self) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.sharded.inner.policy, options=opts)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Collective: the full (unsharded) weights on rank 0, {} elsewhere."""
        return self._full()

    def _broadcast_source(self) -> tuple[dict[str, torch.Tensor], int, bool]:
        """Every rank takes part in the gather; rank 0, the weight group's member, sends."""
        return self._full(), self.sharded.inner.version, self.rank == 0

    def checkpoint_parts(self) -> dict[str, object]:
        """Collective: the full optimizer state (keyed by parameter name) on rank 0."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        inner = self.sharded.inner
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        optim = get_optimizer_state_dict(inner.policy, inner.opt, options=opts)
        return {
            "optimizer": optim,
            "scheduler": inner.sched.state_dict(),
            "learner_state": {"version": inner.version, "learners": self.world},
        }

    def load_checkpoint_parts(self, load) -> int:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        inner = self.sharded.inner
        state = load("learner_state")
        if state.get("learners", 1) != self.world:
            raise ValueError(
                f"this checkpoint was written by {state.get('learners', 1)} learner(s); resume it with "
                f"distributed.learners={state.get('learners', 1)}"
            )
        opts = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(inner.policy, inner.opt, optim_state_dict=load("optimizer"), options=opts)
        inner.sched.load_state_dict(load("scheduler"))
        inner.version = int(state["version"])
        return inner.version

    def last_train_logprobs(self) -> torch.Tensor:
        return self.sharded.inner.last_train_logprobs

    def save_pretrained(self, path: str, **kw) -> None:
        """Collective: rank 0 writes the full weights (shared storage on a cluster)."""
        full = self._full()
        if self.rank == 0:
            self.sharded.inner.policy.save_pretrained(path, state_dict=full, **kw)
            cfg_file = Path(path) / "config.json"  # the class FSDP made is not a loadable architecture
            conf = json.loads(cfg_file.read_text())
            conf["architectures"] = [self.arch.removeprefix("FSDP")]
            cfg_file.write_text(json.dumps(conf, indent=2))


def assemble_logprobs(parts: list[tuple[list[int], torch.Tensor]], shape: torch.Size) -> torch.Tensor:
    """The ranks' epoch-0 logprobs back in batch order."""
    out = torch.zeros(shape)
    for rows, lp in parts:
        out[torch.as_tensor(rows, dtype=torch.long)] = lp
    return out


__all__ = [
    "Shard",
    "ShardedLearner",
    "ShardedLearnerHost",
    "assemble_logprobs",
    "batch_rows",
    "combine_metrics",
    "plan_shards",
]
