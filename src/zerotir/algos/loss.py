"""The whole RL objective as one pure function: policy term + KL term + entropy bonus, with metrics.

`rl_loss` composes the terms of losses.py exactly as the trainer did by hand before (same order of
floating-point operations, so the same seed gives the same numbers). Which policy loss runs is a
registry lookup (`POLICY_LOSSES[settings.policy_loss]`), never a branch on an algorithm's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from zerotir.algos.losses import LossOutput, aggregate, entropy_from_logits, kl_penalty, policy_loss

PolicyLoss = Callable[..., LossOutput]
"""(logprobs, old_logprobs, advantages, mask, *, clip_low, clip_high, dual_clip, agg, ratio_level,
norm_len) -> LossOutput with `clip_ratio` and `ratio_max` metrics."""

POLICY_LOSSES: dict[str, PolicyLoss] = {
    "clip": policy_loss,
}
"""Policy-gradient surrogates by name (`algo.policy_loss`). GSPO is `clip` with `ratio_level=sequence`."""


@dataclass(frozen=True)
class LossSettings:
    """The loss's hyperparameters (from `algo.*`; `norm_len` from the response budget)."""

    policy_loss: str = "clip"
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    agg: str = "token-mean"
    ratio_level: Literal["token", "sequence"] = "token"
    norm_len: int | None = None
    kl_coef: float = 0.0
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    kl_in_loss: bool = True
    """False when the KL is folded into the rewards instead (REINFORCE++): then it is only measured."""
    entropy_coef: float = 0.0


_SURROGATE_ARGS = ("clip_low", "clip_high", "dual_clip", "ratio_level", "norm_len")


@dataclass
class LossInputs:
    """(B, T) tensors of one micro-batch; the entropy from `entropy` (B, T) when given (computed in
    chunks by the learner, train/batch.py response_stats), else from `logits` (B, T, V);
    `ref_logprobs` when a reference policy is loaded."""

    logprobs: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    settings: LossSettings
    logits: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None


def rl_loss(x: LossInputs) -> LossOutput:
    """loss = policy_loss − entropy_coef·H + kl_coef·KL(π‖π_ref) (the KL only when `kl_in_loss`).

    Metrics (detached): policy_loss, entropy (token mean), clip_ratio, ratio_max, and kl when a
    reference is given. The entropy is computed without a graph unless its coefficient is non-zero."""
    s = x.settings
    try:
        surrogate = POLICY_LOSSES[s.policy_loss]
    except KeyError:
        raise ValueError(
            f"unknown policy loss {s.policy_loss!r}; registered: {sorted(POLICY_LOSSES)}"
        ) from None
    out = surrogate(
        x.logprobs,
        x.old_logprobs,
        x.advantages,
        x.mask,
        agg=s.agg,
        **{k: getattr(s, k) for k in _SURROGATE_ARGS},
    )
    loss = out.loss
    metrics = {
        "policy_loss": out.loss.detach(),
        "clip_ratio": out.metrics["clip_ratio"],
        "ratio_max": out.metrics["ratio_max"],
    }
    if x.entropy is not None or x.logits is not None:
        with torch.no_grad() if s.entropy_coef == 0 else torch.enable_grad():
            if x.entropy is not None:
                ent = x.entropy
            else:
                assert x.logits is not None
                ent = entropy_from_logits(x.logits)
            ent = ent.to(x.logprobs.device)
            ent_mean = aggregate(ent, x.mask, "token-mean")
        if s.entropy_coef:
            loss = loss - s.entropy_coef * ent_mean
        metrics["entropy"] = ent_mean.detach()
    if x.ref_logprobs is not None:
        kl_mean = aggregate(kl_penalty(x.logprobs, x.ref_logprobs, s.kl_estimator), x.mask, "token-mean")
        if s.kl_in_loss:
            loss = loss + s.kl_coef * kl_mean
        metrics["kl"] = kl_mean.detach()
    return LossOutput(loss, metrics)


def logprob_mismatch(
    rollout_logprobs: torch.Tensor, trainer_logprobs: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """How far the engine's logprobs are from the trainer's on the same tokens (detached):
    `mismatch_kl` = k3 estimate of KL(π_rollout‖π_trainer) (token mean, ≥ 0), `mismatch_max_abs` =
    max |Δ log p|. ~0 for a shared module; a jump means a weight-sync or kernel/dtype bug."""
    with torch.no_grad():
        m = mask.to(trainer_logprobs.dtype)
        k3 = kl_penalty(rollout_logprobs, trainer_logprobs.detach(), "k3")
        diff = (trainer_logprobs.detach() - rollout_logprobs).abs() * m
        return {
            "mismatch_kl": aggregate(k3, m, "token-mean"),
            "mismatch_max_abs": diff.max() if m.any() else diff.new_zeros(()),
        }
