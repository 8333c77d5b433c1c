"""One registry from `algo.name` to its advantage computation, so the trainer never branches on it.

Each estimator maps `AdvantageInputs` to (advantages (B, T), returns (B, T) or None). Environment
tokens and excluded trajectories have mask 0 and get advantage 0 everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from zerotir.algos.advantages import (
    broadcast_to_tokens,
    gae,
    grpo_advantages,
    masked_whiten,
    outcome_token_rewards,
    reinforce_pp_advantages,
    rloo_advantages,
)


@dataclass
class AdvantageInputs:
    rewards: torch.Tensor  # (B,) outcome rewards
    mask: torch.Tensor  # (B, T) action mask
    group_size: int
    kl: torch.Tensor | None = None  # (B, T) per-token KL estimate, when folded into the reward
    kl_coef: float = 0.0
    values: torch.Tensor | None = None  # (B, T) critic values (PPO)
    gamma: float = 1.0
    lam: float = 1.0


Estimator = Callable[[AdvantageInputs], tuple[torch.Tensor, torch.Tensor | None]]


def _grpo(x: AdvantageInputs) -> tuple[torch.Tensor, None]:
    return broadcast_to_tokens(grpo_advantages(x.rewards, x.group_size, norm_std=True), x.mask), None


def _dr_grpo(x: AdvantageInputs) -> tuple[torch.Tensor, None]:
    return broadcast_to_tokens(grpo_advantages(x.rewards, x.group_size, norm_std=False), x.mask), None


def _rloo(x: AdvantageInputs) -> tuple[torch.Tensor, None]:
    return broadcast_to_tokens(rloo_advantages(x.rewards, x.group_size), x.mask), None


def _reinforce_pp(x: AdvantageInputs) -> tuple[torch.Tensor, None]:
    return reinforce_pp_advantages(x.rewards, x.mask, x.kl, x.kl_coef, x.gamma), None


def _reinforce_pp_baseline(x: AdvantageInputs) -> tuple[torch.Tensor, None]:
    return reinforce_pp_advantages(
        x.rewards, x.mask, x.kl, x.kl_coef, x.gamma, baseline_group_size=x.group_size
    ), None


def _ppo(x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    if x.values is None:
        raise ValueError("PPO advantages need critic values")
    tok = outcome_token_rewards(x.rewards, x.mask)
    if x.kl is not None and x.kl_coef:
        tok = tok - x.kl_coef * x.kl * x.mask
    adv, returns = gae(tok, x.values, x.mask, x.gamma, x.lam)
    return masked_whiten(adv, x.mask), returns


KL_IN_REWARD = frozenset({"reinforce_pp", "reinforce_pp_baseline", "ppo"})
"""The estimators that fold a per-token KL into their token rewards (`algo.kl_in_reward`); the group
estimators broadcast one advantage per sequence and have no token rewards to fold it into."""

ESTIMATORS: dict[str, Estimator] = {
    "grpo": _grpo,
    "dr_grpo": _dr_grpo,
    "rloo": _rloo,
    "reinforce_pp": _reinforce_pp,
    "reinforce_pp_baseline": _reinforce_pp_baseline,
    "ppo": _ppo,
}
