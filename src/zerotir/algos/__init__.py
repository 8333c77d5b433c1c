"""Pure RL maths: advantages, losses, filters. No I/O, no models, no sandboxes."""

from zerotir.algos.advantages import (
    broadcast_to_tokens,
    discounted_returns,
    gae,
    grpo_advantages,
    masked_mean,
    masked_whiten,
    outcome_token_rewards,
    reinforce_pp_advantages,
    rloo_advantages,
)
from zerotir.algos.filters import accuracy_band_keep, nonuniform_keep, soft_overlong_penalty
from zerotir.algos.losses import (
    LossOutput,
    aggregate,
    entropy_from_logits,
    kl_penalty,
    policy_loss,
    value_loss,
)

__all__ = [
    "broadcast_to_tokens",
    "discounted_returns",
    "gae",
    "grpo_advantages",
    "masked_mean",
    "masked_whiten",
    "outcome_token_rewards",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "accuracy_band_keep",
    "nonuniform_keep",
    "soft_overlong_penalty",
    "LossOutput",
    "aggregate",
    "entropy_from_logits",
    "kl_penalty",
    "policy_loss",
    "value_loss",
]
