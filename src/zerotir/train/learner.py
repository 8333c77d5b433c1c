"""The `Learner`: policy, reference, critic, their optimizers and the LR schedule; nothing else.

It knows tokens, masks, rewards' advantages and weights, never prompts, tools, engines or data.
One step is two calls, with the advantages computed in between by the orchestrator:

    batch = learner.prepare(trajectories, recompute=...)   # collate; ref logprobs, KL, critic values
    metrics = learner.train_on_batch(batch, advantages)    # policy (+ critic) update; version += 1

`state_dict()` / `version` are what a rollout engine syncs from; `checkpoint_parts()` /
`load_checkpoint_parts()` are its share of a checkpoint (the orchestrator adds data position and RNG).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from zerotir.algos import kl_penalty, masked_mean
from zerotir.algos.loss import LossInputs, LossSettings, logprob_mismatch, rl_loss
from zerotir.algos.losses import value_loss
from zerotir.config import AlgoConfig, TrainerConfig
from zerotir.train.batch import (
    TokenBatch,
    ValueModel,
    batched_logprobs,
    collate,
    micro_batches,
    response_stats,
)
from zerotir.types import Trajectory


@dataclass
class LearnerBatch:
    """A step's trajectories as tensors, scored by the learner's models before any update."""

    tokens: TokenBatch
    rewards: torch.Tensor  # (B,) outcome rewards
    ref_logprobs: torch.Tensor | None = None  # (B, T) under the reference policy
    kl: torch.Tensor | None = None  # (B, T) per-token KL(behaviour ‖ ref), masked
    values: torch.Tensor | None = None  # (B, T) critic values, masked (PPO)


@dataclass
class Advantages:
    advantages: torch.Tensor  # (B, T)
    returns: torch.Tensor | None = None  # (B, T) value targets (PPO)


def lr_lambda(t: TrainerConfig) -> Callable[[int], float]:
    """Linear warm-up, then constant or cosine decay to 0 at `total_steps`."""

    def f(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.schedule == "cosine":
            p = (step - t.warmup_steps) / max(1, t.total_steps - t.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
        return 1.0

    return f


class Learner:
    def __init__(
        self,
        algo: AlgoConfig,
        trainer: TrainerConfig,
        policy: torch.nn.Module,
        *,
        pad_id: int,
        temperature: float,
        norm_len: int,
        ref: torch.nn.Module | None = None,
        critic: ValueModel | None = None,
    ):
        """`temperature`: the sampling temperature (logprobs are of softmax(logits / T));
        `norm_len`: the response budget (Dr.GRPO's constant length normaliser)."""
        self.algo, self.cfg = algo, trainer
        self.policy, self.ref, self.critic = policy, ref, critic
        self.pad_id, self.temperature, self.device = pad_id, temperature, trainer.device
        self.version = 0
        """Increments with every update: which weights an engine holds."""
        same = ("policy_loss", "clip_low", "clip_high", "dual_clip", "ratio_level", "kl_coef", "kl_estimator")
        self.settings = LossSettings(
            **{k: getattr(algo, k) for k in (*same, "entropy_coef")},
            agg=algo.loss_agg,
            norm_len=norm_len,
            kl_in_loss=not algo.kl_in_reward,
        )
        if critic is not None:
            self.critic_opt = torch.optim.AdamW(critic.parameters(), lr=algo.critic_lr or 0.0)
        self.opt = torch.optim.AdamW(policy.parameters(), lr=trainer.lr, weight_decay=trainer.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(trainer))

    def _autocast(self) -> torch.autocast:
        """bfloat16 autocast of the policy's forward when `trainer.bf16` (CPU or CUDA)."""
        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.cfg.bf16)

    # ------------------------------------------------------------------ before the advantages
    def prepare(self, trajs: list[Trajectory], recompute: bool) -> LearnerBatch:
        """Collate and score: `recompute` the behaviour logprobs with the policy (kept apart from the
        engine's), reference logprobs and the per-token KL, critic values."""
        t = self.cfg
        batch = collate(trajs, self.pad_id)
        mask = batch.action_mask
        rewards = torch.tensor([tr.reward or 0.0 for tr in trajs], dtype=torch.float32)
        if recompute:
            with self._autocast():
                batch.recomputed_logprobs = batched_logprobs(
                    self.policy, batch, t.micro_batch_size, self.temperature, self.device, t.logprob_chunk
                )
        out = LearnerBatch(batch, rewards)
        if self.ref is not None:
            with self._autocast():
                out.ref_logprobs = batched_logprobs(
                    self.ref, batch, t.micro_batch_size, self.temperature, self.device, t.logprob_chunk
                )
            out.kl = kl_penalty(batch.old_logprobs, out.ref_logprobs, self.algo.kl_estimator) * mask
        if self.critic is not None:
            with torch.no_grad():
                values = torch.cat(
                    [
                        self.critic(batch.select(idx), self.device).float().cpu()
                        for idx in micro_batches(len(trajs), t.micro_batch_size)
                    ]
                )
            out.values = values * mask
        return out

    # ------------------------------------------------------------------ the update
    def train_on_batch(self, lb: LearnerBatch, adv: Advantages) -> dict[str, float]:
        a, t = self.algo, self.cfg
        batch = lb.tokens
        mask = batch.action_mask
        B = mask.size(0)
        n_tokens = mask.sum().clamp(min=1.0)
        acc: dict[str, float] = {}
        # The policy's logprobs of the batch before any optimizer step (epoch 0): the per-token values
        # behind train/mismatch_kl, kept for whoever records samples (the rollout inspector).
        self.last_train_logprobs = torch.zeros_like(mask)
        self.policy.train()
        for epoch in range(t.ppo_epochs):
            self.opt.zero_grad(set_to_none=True)
            for idx in micro_batches(B, t.micro_batch_size):
                mb = batch.select(idx)
                m = mb.action_mask
                if m.sum() == 0:
                    continue
                with self._autocast():  # logprobs and entropy in chunks: no (B, L, V) logits
                    lp, ent = response_stats(
                        self.policy, mb, self.device, self.temperature, t.logprob_chunk, a.entropy_coef != 0
                    )
                lp = lp.cpu()  # no-op on CPU
                # weight so that the sum over micro-batches equals the full-batch aggregate
                w = (m.sum() / n_tokens) if a.loss_agg == "token-mean" else torch.tensor(len(idx) / B)
                out = rl_loss(
                    LossInputs(
                        lp,
                        mb.old_logprobs,
                        adv.advantages[idx],
                        m,
                        self.settings,
                        entropy=ent,
                        ref_logprobs=None if lb.ref_logprobs is None else lb.ref_logprobs[idx],
                    )
                )
                (out.loss * w).backward()  # type: ignore[no-untyped-call]
                if epoch == 0:  # before any step: the trainer's recomputation of the engine's tokens
                    self.last_train_logprobs[idx] = lp.detach()
                    mis = logprob_mismatch(mb.rollout_logprobs, lp, m)
                    _add(acc, "train/mismatch_kl", float(mis["mismatch_kl"]) * float(m.sum() / n_tokens))
                    _max(acc, "train/mismatch_max_abs", float(mis["mismatch_max_abs"]))
                if "kl" in out.metrics:
                    _add(acc, "train/kl", float(out.metrics["kl"]) * float(w))
                _add(acc, "train/policy_loss", float(out.metrics["policy_loss"]) * float(w))
                _add(acc, "train/entropy", float(out.metrics["entropy"]) * float(w))
                _add(acc, "train/clip_ratio", float(out.metrics["clip_ratio"]) * float(w))
                _max(acc, "train/ratio_max", float(out.metrics["ratio_max"]))
            gn = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), t.grad_clip)
            acc["train/grad_norm"] = float(gn)
            self.opt.step()
        self.opt.zero_grad(
            set_to_none=True
        )  # the policy's gradients are dead weight during the critic's update
        once = ("train/ratio_max", "train/grad_norm", "train/mismatch_kl", "train/mismatch_max_abs")
        acc = {k: (v / t.ppo_epochs if k not in once else v) for k, v in acc.items()}
        acc["train/lr"] = float(self.sched.get_last_lr()[0])
        self.sched.step()
        if self.critic is not None:
            assert adv.returns is not None and lb.values is not None, "PPO needs returns and old values"
            acc["train/value_loss"] = self._update_critic(batch, adv.returns, lb.values)
        acc["train/adv_abs_mean"] = float(masked_mean(adv.advantages.abs(), mask))
        self.version += 1
        return acc

    def _update_critic(self, batch: TokenBatch, returns: torch.Tensor, old_values: torch.Tensor) -> float:
        a, t = self.algo, self.cfg
        assert self.critic is not None
        B = batch.input_ids.size(0)
        last = 0.0
        self.critic.train()  # HF gradient checkpointing acts in train mode only
        for _ in range(a.critic_steps or 0):
            self.critic_opt.zero_grad(set_to_none=True)
            total = 0.0
            for idx in micro_batches(B, t.micro_batch_size):
                mb = batch.select(idx)
                v = self.critic(mb, self.device).float().cpu()
                out = value_loss(v, old_values[idx], returns[idx], mb.action_mask, a.value_clip)
                w = len(idx) / B
                (out.loss * w).backward()  # type: ignore[no-untyped-call]
                total += float(out.loss.detach()) * w
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), t.grad_clip)
            self.critic_opt.step()
            last = total
        self.critic_opt.zero_grad(set_to_none=True)
        return last

    # ------------------------------------------------------------------ weights and checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The policy's weights at `version` (for engine sync)."""
        return self.policy.state_dict()

    def checkpoint_parts(self) -> dict[str, object]:
        parts: dict[str, object] = {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "learner_state": {"version": self.version},
        }
        if self.critic is not None:
            parts["critic"] = self.critic.state_dict()
            parts["critic_optimizer"] = self.critic_opt.state_dict()
        return parts

    def load_checkpoint_parts(self, load: Callable[[str], object]) -> None:
        """`load(name)` returns the object saved under `name` by `checkpoint_parts`."""
        self.opt.load_state_dict(load("optimizer"))  # type: ignore[arg-type]
        self.sched.load_state_dict(load("scheduler"))  # type: ignore[arg-type]
        self.version = int(load("learner_state")["version"])  # type: ignore[index]
        if self.critic is not None:
            self.critic.load_state_dict(load("critic"))  # type: ignore[arg-type]
            self.critic_opt.load_state_dict(load("critic_optimizer"))  # type: ignore[arg-type]


def _add(acc: dict[str, float], key: str, v: float) -> None:
    acc[key] = acc.get(key, 0.0) + v


def _max(acc: dict[str, float], key: str, v: float) -> None:
    acc[key] = max(acc.get(key, 0.0), v)
