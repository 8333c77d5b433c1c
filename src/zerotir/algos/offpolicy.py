"""Off-policy corrections for samples drawn by an older policy than the one being trained.

An asynchronous pipeline trains on tokens sampled by the *behaviour* policy μ (the weights a rollout
worker held, `rollout_logprobs`) while the learner is at a newer θ_old (its own recomputation on the
same tokens, `trainer_logprobs`: the *proximal* policy). Which of the two is the PPO ratio's
denominator, and how the gap μ → θ_old is weighted, is a choice the user must make: a pipeline that
silently recomputes the denominator with the current actor ignores staleness altogether.

    method      ratio denominator   per-token weight w                       when
    on_policy   trainer (or μ)      1                                        staleness 0 only
    behaviour   μ                   1 (PPO's clip alone bounds the step)      cheap, no recompute
    tis         θ_old               min(θ_old/μ, cap)          (truncated IS) Yao et al. 2025
    decoupled   θ_old (proximal)    θ_old/μ, tokens with w > cap masked out   Hilton et al. 2021; AReaL

The weight multiplies the advantages: for w >= 0, w·min(rA, clip(r)A) = min(r·wA, clip(r)·wA) (and
the same for the dual clip), so weighting the advantage *is* weighting the clipped surrogate, and
`rl_loss` needs no new input. Pure tensor functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zerotir.types import StrEnum


class OffPolicy(StrEnum):
    ON_POLICY = "on_policy"
    BEHAVIOUR = "behaviour"
    TIS = "tis"
    DECOUPLED = "decoupled"


NEEDS_TRAINER_LOGPROBS = frozenset({OffPolicy.TIS, OffPolicy.DECOUPLED})
"""Methods whose denominator is the learner's recomputation (the proximal policy)."""


@dataclass
class Correction:
    old_logprobs: torch.Tensor
    """(B, T) the PPO ratio's denominator."""
    weights: torch.Tensor
    """(B, T) importance weights that multiply the advantages (0 off the mask)."""
    mask: torch.Tensor
    """(B, T) tokens that stay in the loss (decoupled drops those over the cap)."""
    metrics: dict[str, float]


def off_policy_correction(
    method: OffPolicy | str,
    rollout_logprobs: torch.Tensor,
    trainer_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    cap: float = 2.0,
) -> Correction:
    """The denominator, weights and mask of `method` (see the module table). `cap` > 0 truncates the
    weight (tis) or is the weight above which a token is dropped (decoupled). Metrics, over the masked
    tokens: `is/weight_mean|max|min` of the raw ratio θ_old/μ, and `is/capped_frac`."""
    method = OffPolicy(method)
    if cap <= 0:
        raise ValueError(f"importance-weight cap must be > 0 (got {cap})")
    mask = mask.float()
    on = mask > 0
    if method in NEEDS_TRAINER_LOGPROBS and trainer_logprobs is None:
        raise ValueError(f"off_policy={method}: needs the learner's recomputed logprobs (recompute=True)")
    metrics: dict[str, float] = {}
    if trainer_logprobs is not None:
        raw = torch.exp(trainer_logprobs - rollout_logprobs) * mask
        if on.any():
            metrics = {
                "is/weight_mean": float(raw[on].mean()),
                "is/weight_max": float(raw[on].max()),
                "is/weight_min": float(raw[on].min()),
            }
    if method == OffPolicy.ON_POLICY:
        old = trainer_logprobs if trainer_logprobs is not None else rollout_logprobs
        return Correction(old, mask.clone(), mask, metrics)
    if method == OffPolicy.BEHAVIOUR:
        return Correction(rollout_logprobs, mask.clone(), mask, metrics)
    assert trainer_logprobs is not None
    over = (raw > cap) & on
    metrics["is/capped_frac"] = float(over.sum() / on.sum().clamp(min=1))
    if method == OffPolicy.TIS:
        return Correction(trainer_logprobs, raw.clamp(max=cap) * mask, mask, metrics)
    keep = mask * (~over).float()
    return Correction(trainer_logprobs, raw * keep, keep, metrics)


__all__ = ["NEEDS_TRAINER_LOGPROBS", "Correction", "OffPolicy", "off_policy_correction"]
