"""Which groups and samples to train on: accuracy filtering, dynamic sampling, overlong handling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class GroupFilter:
    """A rule that keeps or drops whole prompt groups after grading.

    `keep(rewards (B,), correct (B,), group_size, low, high) -> (n_groups,) bool`. `refill`: dropped
    groups are replaced by sampling more prompts (DAPO dynamic sampling, up to
    `algo.max_resample_rounds` extra rounds), and at most `prompts_per_step` groups are kept."""

    keep: Callable[[torch.Tensor, torch.Tensor, int, float, float], torch.Tensor]
    refill: bool = False


def _keep_all(rewards: torch.Tensor, correct: torch.Tensor, group_size: int, low: float, high: float):
    return torch.ones(rewards.numel() // group_size, dtype=torch.bool)


GROUP_FILTERS: dict[str, GroupFilter] = {
    "none": GroupFilter(_keep_all),
    "accuracy_band": GroupFilter(lambda r, c, g, lo, hi: accuracy_band_keep(c, g, lo, hi)),
    "dynamic": GroupFilter(lambda r, c, g, lo, hi: nonuniform_keep(r, g), refill=True),
}
"""Group filters by name (`algo.filter`), so the loop never branches on a filter's name."""


Overlong = Callable[[torch.Tensor, torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor]]


def _overlong_none(lengths, truncated, max_len, cache):
    return torch.zeros(lengths.shape), torch.zeros(lengths.shape, dtype=torch.bool)


def _overlong_mask(lengths, truncated, max_len, cache):
    return torch.zeros(lengths.shape), truncated.bool()


def _overlong_soft(lengths, truncated, max_len, cache):
    pen = soft_overlong_penalty(lengths, max_len, cache)
    return torch.where(truncated.bool(), pen, torch.zeros_like(pen)), torch.zeros(lengths.shape, dtype=torch.bool)


OVERLONG: dict[str, Overlong] = {"none": _overlong_none, "mask": _overlong_mask, "soft": _overlong_soft}
"""Overlong handling by name (`algo.overlong`): `(lengths (B,), truncated (B,), max_len, cache) ->
(reward penalty (B,), exclude (B,) bool)` for responses cut by the length budget."""
