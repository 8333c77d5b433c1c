"""What vLLM's engine core computed: engine steps, batch sizes, prefilled and cached prompt tokens.

Wall time alone cannot say why a tool-integrated rollout is slower than plain generation of the
same model tokens. The engine's own counts can: each resumed request prefills the part of its
prefix that the prefix cache does not hold (whole KV blocks only), plus the injected execution
output; a row waiting for the sandbox leaves the batch, so the same tokens take more, smaller
steps. `EngineWork` accumulates those counts from vLLM's stat-logger interface (one `record` per
engine step with output), which the async engine installs; `AsyncVLLMEngine.work` holds them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass
class EngineWork:
    """Running totals since the engine started; subtract two snapshots (`since`) for one call."""

    steps: int = 0
    """Engine steps that produced output."""
    running_sum: int = 0
    """Requests in the batch, summed over steps (mean batch = running_sum / steps)."""
    generated: int = 0
    """Tokens sampled and delivered. vLLM matches stop strings in the front end, so a request may
    sample a token or two past its stop before the abort reaches the core; those are not counted."""
    prompt_total: int = 0
    """Prompt tokens of the requests that started (a resumed trajectory's whole prefix)."""
    prompt_computed: int = 0
    """Of those, prefilled: not found in the prefix cache."""
    prompt_cached: int = 0
    """Of those, served by the prefix cache."""
    requests: int = 0
    """Requests submitted (a tool rollout submits one per segment)."""

    def snapshot(self) -> EngineWork:
        return replace(self)

    def since(self, before: EngineWork) -> EngineWork:
        return EngineWork(**{k: v - getattr(before, k) for k, v in asdict(self).items()})

    def summary(self) -> dict[str, float]:
        """The counts plus what they explain: computed tokens (prefill + decode), mean batch."""
        d: dict[str, float] = dict(asdict(self))
        d["computed_tokens"] = self.prompt_computed + self.generated
        d["mean_batch"] = self.running_sum / self.steps if self.steps else 0.0
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
                work.prompt_total += p.total
                work.prompt_computed += p.computed
                work.prompt_cached += p.cached_tokens

        def log_engine_initialized(self) -> None:
            pass

    return _WorkLogger
