"""Policy, value, KL and entropy terms: pure functions over (B, T) tensors and the action mask.

Token aggregation is its own function (`aggregate`), never a branch inside a loss. Every metric is
detached. Masked positions (padding and injected tool output) contribute nothing to any term.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from zerotir.algos.advantages import masked_mean

Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def aggregate(
    loss_mat: torch.Tensor, mask: torch.Tensor, mode: Aggregation = "token-mean", norm_len: int | None = None
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar.

    token-mean: Σ loss·m / Σ m (DAPO: long responses weigh by their length);
    seq-mean-token-mean: mean over sequences of each one's token mean (GRPO paper);
    seq-mean-token-sum-norm: Σ loss·m / (B · norm_len) with a constant norm_len (Dr.GRPO), T if unset.
    """
    m = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return (loss_mat * m).sum() / m.sum().clamp(min=1.0)
    if mode == "seq-mean-token-mean":
        per_seq = (loss_mat * m).sum(1) / m.sum(1).clamp(min=1.0)
        has = (m.sum(1) > 0).to(loss_mat.dtype)
        return (per_seq * has).sum() / has.sum().clamp(min=1.0)
    if mode == "seq-mean-token-sum-norm":
        return (loss_mat * m).sum() / (loss_mat.size(0) * float(norm_len or loss_mat.size(1)))
    raise ValueError(f"unknown loss aggregation {mode!r}")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    agg: Aggregation = "token-mean",
    ratio_level: Literal["token", "sequence"] = "token",
    norm_len: int | None = None,
) -> LossOutput:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7) with asymmetric clip [1−ε_low, 1+ε_high]
    (DAPO clip-higher), optional dual clip (Ye et al. 2020: for A < 0 the loss is capped at −c·A), and
    GSPO's sequence-level ratio (Zheng et al. 2025: exp of the mean token log-ratio) as an option.
    """
    m = mask.to(logprobs.dtype)
    log_ratio = (logprobs - old_logprobs) * m
    if ratio_level == "sequence":
        seq_lr = log_ratio.sum(1) / m.sum(1).clamp(min=1.0)
        # token-wise form whose value is the sequence ratio and whose gradient flows through each token
        log_ratio = (seq_lr.detach()[:, None] + logprobs - logprobs.detach()) * m
    ratio = torch.exp(log_ratio)
    surr1 = -advantages * ratio
    surr2 = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss_mat = torch.maximum(surr1, surr2)
    clipped = (surr2 > surr1).to(logprobs.dtype)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError("dual_clip must be > 1")
        capped = torch.minimum(loss_mat, -advantages * dual_clip)
        loss_mat = torch.where(advantages < 0, capped, loss_mat)
    loss = aggregate(loss_mat, mask, agg, norm_len)
    with torch.no_grad():
        metrics = {
            "clip_ratio": masked_mean(clipped, m),
            "approx_kl": masked_mean(0.5 * (logprobs - old_logprobs) ** 2, m),
            "ratio_max": (ratio * m + (1 - m) * ratio.new_zeros(())).max()
            if m.any()
            else ratio.new_zeros(()),
            "ratio_mean": masked_mean(ratio, m),
        }
    return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float | None = 0.2,
) -> LossOutput:
    """Clipped value loss (PPO2 baselines): ½·max((V−R)², (clip(V, V_old±ε)−R)²), token mean."""
    err = (values - returns) ** 2
    if clip_eps is not None:
        v_clip = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        err = torch.maximum(err, (v_clip - returns) ** 2)
    loss = 0.5 * masked_mean(err, mask)
    return LossOutput(loss, {"value_mean": masked_mean(values, mask).detach()})


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: Literal["k1", "k2", "k3"] = "k3"
) -> torch.Tensor:
    """Per-token KL(π‖π_ref) estimators (Schulman, "Approximating KL divergence", 2020).

    k1 = log π − log π_ref; k2 = ½(log π − log π_ref)²; k3 = exp(log π_ref − log π) − (log π_ref − log π) − 1.
    """
    d = logprobs - ref_logprobs
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d**2
    if kind == "k3":
        return torch.exp(-d) - (-d) - 1.0
    raise ValueError(f"unknown KL estimator {kind!r}")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits), (B, T, V) -> (B, T)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
