"""Advantage estimators: pure tensor functions, one per formula.

Shapes: B sequences, T response tokens. `mask` (B, T) is the action mask: 1 where the model sampled
the token, 0 on padding *and on environment-injected tool output*. Every function returns zeros on
masked positions, so environment tokens get no advantage and no value target.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, shift_mean: bool = True
) -> torch.Tensor:
    """(x - mean) / std over masked entries (population variance, as OpenRLHF/veRL)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) if shift_mean else x
    return out * torch.rsqrt(var + eps) * mask.to(x.dtype)


def last_action_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last action token of each row (0 for rows without any)."""
    T = mask.size(1)
    idx = torch.arange(T, device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), idx, torch.zeros_like(idx)).max(dim=1).values


def outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) zeros with each sequence's reward on its last action token."""
    out = torch.zeros(mask.shape, dtype=rewards.dtype, device=rewards.device)
    has = mask.sum(1) > 0
    rows = torch.arange(mask.size(0), device=mask.device)[has]
    out[rows, last_action_index(mask)[has]] = rewards[has]
    return out


def gae(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016, eq. 16) over action tokens only.

    Environment tokens are transparent: the recursion jumps from one action token to the next, so
    δ_t = r_t + γ V(next action state) − V(s_t). The paper uses λ = 1 ("did not affect the results").
    Returns (advantages, returns), both (B, T) and zero where mask = 0.
    """
    B, T = mask.shape
    m = mask.to(values.dtype)
    adv = torch.zeros_like(values)
    next_value = torch.zeros(B, dtype=values.dtype, device=values.device)
    last = torch.zeros(B, dtype=values.dtype, device=values.device)
    for t in reversed(range(T)):
        mt = m[:, t]
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        new_last = delta + gamma * lam * last
        last = torch.where(mt.bool(), new_last, last)
        next_value = torch.where(mt.bool(), values[:, t], next_value)
        adv[:, t] = new_last * mt
    returns = (adv + values) * m
    return adv, returns


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.view(-1, group_size)


def grpo_advantages(
    rewards: torch.Tensor, group_size: int, norm_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO (Shao et al. 2024, eq. 3 outcome supervision): (r − mean_g) / (std_g + ε).

    `norm_std=False` is Dr.GRPO (Liu et al. 2025): the std division biases towards easy/hard groups.
    Returns (B,) sequence advantages; std is the unbiased sample std, as in the reference code.
    """
    g = _grouped(rewards, group_size)
    centred = g - g.mean(dim=1, keepdim=True)
    if norm_std:
        centred = centred / (g.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): r_i − mean of the other G−1 rewards of the group."""
    g = _grouped(rewards, group_size)
    if group_size < 2:
        raise ValueError("RLOO needs group_size >= 2")
    loo = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    return (g - loo).reshape(-1)


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = Σ_{k≥t} γ^{k−t} r_k over action tokens (env tokens skipped, their return 0)."""
    B, T = mask.shape
    m = mask.to(token_rewards.dtype)
    out = torch.zeros_like(token_rewards)
    running = torch.zeros(B, dtype=token_rewards.dtype, device=token_rewards.device)
    for t in reversed(range(T)):
        new = token_rewards[:, t] + gamma * running
        running = torch.where(m[:, t].bool(), new, running)
        out[:, t] = running * m[:, t]
    return out


def reinforce_pp_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    baseline_group_size: int | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """REINFORCE++ (Hu 2025): token rewards = outcome at the last token − β·KL_t at every token,
    discounted returns, then normalisation over the *whole batch* (not per group).

    With `baseline_group_size` this is REINFORCE++-baseline: the group mean reward is subtracted
    first, then the same global normalisation.
    """
    r = rewards
    if baseline_group_size:
        g = _grouped(rewards, baseline_group_size)
        r = (g - g.mean(dim=1, keepdim=True)).reshape(-1)
    tok = outcome_token_rewards(r, mask)
    if kl is not None and kl_coef:
        tok = tok - kl_coef * kl * mask.to(kl.dtype)
    returns = discounted_returns(tok, mask, gamma)
    return masked_whiten(returns, mask, eps)


def broadcast_to_tokens(seq_adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) sequence advantages -> (B, T), zero on non-action tokens."""
    return seq_adv[:, None].to(torch.float32) * mask.to(torch.float32)
