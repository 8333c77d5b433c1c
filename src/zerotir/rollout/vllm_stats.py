"""What vLLM's engine core computed: engine steps, batch sizes, prefilled and cached prompt tokens.

Wall time alone cannot say why a tool-integrated rollout is slower than plain generation of the
same model tokens. The engine's own counts can: each resumed request prefills the part of its
prefix that the prefix cache does not hold (whole KV blocks only), plus the injected execution
output; a row waiting for the sandbox leaves the batch, so the same tokens take more, smaller
steps. `EngineWork` accumulates those counts from vLLM's stat-logger interface (one `record` per
engine step with output), which the async engine installs; `AsyncVLLMEngine.work` holds them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class EngineWork:
    """Running totals since the engine started; subtract two snapshots (`since`) for one call."""

    steps: int = 0
    """Engine steps that produced output."""
    prefill_steps: int = 0
    """Of those, steps in which some request finished its prefill (a resumed segment joined)."""
    running_sum: int = 0
    """Requests in the batch, summed over steps (mean batch = running_sum / steps)."""
    generated: int = 0
    """Tokens sampled and delivered to the front end. Stops are matched there (vLLM's stop strings,
    and the async engine's own matcher), so a request may sample a token or two past its stop
    before the abort reaches the core: those delivered are counted here and in `discarded`, those
    dropped by the front end after the abort are not."""
    discarded: int = 0
    """Tokens delivered past a stop that the async engine matched itself (a closed call, a
    template stop): sampled, then cut from the row. Wasted work, counted in `generated` too."""
    prompt_total: int = 0
    """Prompt tokens of the requests that started (a resumed trajectory's whole prefix)."""
    prompt_computed: int = 0
    """Of those, prefilled: not found in the prefix cache."""
    prompt_cached: int = 0
    """Of those, served by the prefix cache."""
    requests: int = 0
    """Requests submitted (a tool rollout submits one per model segment: the prompt's, then one
    after each execution)."""
    by_cause: dict[str, list[int]] = field(default_factory=dict)
    """Why a request was submitted -> [requests, prompt tokens, prefilled (uncached) prompt tokens],
    from each request's `num_cached_tokens`. Causes: prompt (a trajectory's first segment), output
    (resumed after an execution's output)."""

    def add_request(self, cause: str, prompt_len: int, cached: int) -> None:
        n = self.by_cause.setdefault(cause, [0, 0, 0])
        n[0], n[1], n[2] = n[0] + 1, n[1] + prompt_len, n[2] + prompt_len - cached

    def snapshot(self) -> EngineWork:
        d = asdict(self)
        d["by_cause"] = {k: list(v) for k, v in self.by_cause.items()}
        return EngineWork(**d)

    def since(self, before: EngineWork) -> EngineWork:
        d = {k: v - getattr(before, k) for k, v in asdict(self).items() if k != "by_cause"}
        zero = [0, 0, 0]
        causes = {
            k: [a - b for a, b in zip(v, before.by_cause.get(k, zero))] for k, v in self.by_cause.items()
        }
        return EngineWork(**d, by_cause={k: v for k, v in causes.items() if v[0]})

    def summary(self) -> dict:
        """The counts plus what they explain: computed tokens (prefill + decode), mean batch."""
        d: dict = {k: v for k, v in asdict(self).items() if k != "by_cause"}
        d["computed_tokens"] = self.prompt_computed + self.generated
        d["mean_batch"] = self.running_sum / self.steps if self.steps else 0.0
        for cause, (n, total, computed) in self.by_cause.items():
            d[f"{cause}_requests"], d[f"{cause}_prompt_tokens"], d[f"{cause}_prefill_computed"] = (
                n,
                total,
                computed,
            )
        return d


def work_logger_factory(work: EngineWork):
    """A vLLM per-engine stat-logger factory whose loggers add every step to `work`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _WorkLogger(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
            if scheduler_stats is not None:
                work.steps += 1
                work.running_sum += scheduler_stats.num_running_reqs
            if iteration_stats is not None:
                work.generated += iteration_stats.num_generation_tokens
                p = iteration_stats.prompt_token_stats
                work.prefill_steps += p.total > 0
                work.prompt_total += p.total
                work.prompt_computed += p.computed
                work.prompt_cached += p.cached_tokens

        def log_engine_initialized(self) -> None:
            pass

    return _WorkLogger
