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


class Interaction(Protocol):
    """What an engine's decode loop asks of a multi-turn driver (the tool loop), row by row.

    Engines that implement `generate_interactive` run a whole tool-integrated rollout in one decode
    loop: a row that closes a code block is *paused* while its code runs, the other rows keep
    decoding, and when the output is ready it is fed into the row's KV cache and the row rejoins
    the batch. Nothing is re-prefilled and no row waits for a round to end.
    """

    def stops(self, i: int) -> list[str]:
        """Current stop strings of row i (asked at the start and after every event)."""
        ...

    def on_stop(self, i: int, stop: str, token_ids: list[int], logprobs: list[float]) -> str:
        """Row i produced `stop`; `token_ids` are its tokens since its last event.
        Returns "continue" (keep sampling with `stops(i)`), "pause" (wait for `poll`) or "finish"."""
        ...

    def on_end(self, i: int, reason: str, token_ids: list[int], logprobs: list[float]) -> None:
        """Row i ended on its own: reason "eos" or "length" (its budget is spent)."""
        ...

    def poll(self, block: bool) -> dict[int, list[int] | None]:
        """Paused rows that may go on: row -> token ids to feed (then keep sampling), or None (row is
        done). With `block`, wait until at least one is ready (every live row is paused)."""
        ...


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
