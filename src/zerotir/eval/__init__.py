"""Evaluation: estimators and the benchmark runner."""

from zerotir.eval.metrics import avg_at_k, maj_at_k, max_at_k, pass_at_k
from zerotir.eval.runner import evaluate_rows

__all__ = ["avg_at_k", "maj_at_k", "max_at_k", "pass_at_k", "evaluate_rows"]
