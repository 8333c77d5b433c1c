"""Sampling-based accuracy estimators: avg@k, unbiased pass@k, maj@k, max@k."""

from __future__ import annotations

from collections import Counter
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, eq. 1): 1 − C(n−c, k) / C(n, k), for n samples with c correct."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples (got {n})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def avg_at_k(correct: list[bool]) -> float:
    """Mean accuracy over the k samples of one problem."""
    return sum(correct) / len(correct) if correct else 0.0


def maj_at_k(answers: list[str | None], correct: list[bool]) -> float:
    """1 if the most frequent extracted answer is correct. Ties: the answer seen first among the most
    frequent wins (deterministic); samples without an answer do not vote."""
    votes = [(a, ok) for a, ok in zip(answers, correct) if a is not None]
    if not votes:
        return 0.0
    counts = Counter(a for a, _ in votes)
    top = max(counts.values())
    winner = next(a for a, _ in votes if counts[a] == top)
    return 1.0 if next(ok for a, ok in votes if a == winner) else 0.0


def max_at_k(correct: list[bool]) -> float:
    """1 if any sample is correct (pass@k with k = n)."""
    return 1.0 if any(correct) else 0.0
