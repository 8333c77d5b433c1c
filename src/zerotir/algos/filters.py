"""Which groups and samples to train on: accuracy filtering, dynamic sampling, overlong handling."""

from __future__ import annotations

import torch


def group_accuracy(correct: torch.Tensor, group_size: int) -> torch.Tensor:
    return correct.float().view(-1, group_size).mean(dim=1)


def accuracy_band_keep(
    correct: torch.Tensor, group_size: int, low: float = 0.2, high: float = 0.8
) -> torch.Tensor:
    """The paper's replay-buffer filter: drop groups whose accuracy is above `high` or below `low`.

    Returns a (n_groups,) bool keep mask.
    """
    acc = group_accuracy(correct, group_size)
    return (acc >= low) & (acc <= high)


def nonuniform_keep(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """DAPO dynamic sampling: drop groups whose rewards are all equal (zero advantage everywhere)."""
    g = rewards.float().view(-1, group_size)
    return (g.max(dim=1).values - g.min(dim=1).values) > 0


def soft_overlong_penalty(lengths: torch.Tensor, max_len: int, cache: int) -> torch.Tensor:
    """DAPO soft overlong punishment: 0 up to max_len − cache, then linear down to −1 at max_len."""
    start = max_len - cache
    pen = -(lengths.float() - start) / max(cache, 1)
    return torch.where(lengths > start, pen.clamp(min=-1.0), torch.zeros_like(pen))
