"""The `Engine` protocol: batched sampling with per-prompt stop strings, token ids and logprobs out.

Logprob convention (shared by every engine and by the trainer's recomputation): the log-probability
of the sampled token under softmax(logits / temperature), before top-p truncation; at temperature 0
(greedy) under softmax(logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None
    ignore_eos: bool = False
    """Keep sampling past EOS (benchmarks that need an exact token count)."""


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    """eos | stop | length."""
    stop_str: str | None = None


@runtime_checkable
class Engine(Protocol):
    tokenizer: object

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        stops: list[list[str]],
        max_tokens: list[int] | None = None,
    ) -> list[Completion]: ...

    def load_weights(self, state_dict: dict) -> None: ...
