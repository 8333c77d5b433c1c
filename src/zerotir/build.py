"""The one translation from a `RunConfig` to objects: engine, sandbox (pool, service, client), tool,
task, policy, learner, rows, sampling.

Training, evaluation, the demo, toy pre-training and the benchmarks all build through here, so a
config field means the same thing everywhere (the eval of a checkpoint runs the protocol it was
trained with: template, budget, exec timeout, output cap).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from zerotir.config import ConfigError, RunConfig
from zerotir.errors import UsageError
from zerotir.rollout.engine import SamplingParams
from zerotir.rollout.protocol import get_template
from zerotir.rollout.tool_loop import ToolLoopConfig
from zerotir.rollout.tools import PythonTool
from zerotir.task import MathTask, RewardFn, load_reward

if TYPE_CHECKING:  # heavy or optional imports stay lazy at run time
    from fastapi import FastAPI

    from zerotir.rollout.engine import Engine
    from zerotir.sandbox.base import Sandbox
    from zerotir.sandbox.pool import ExecutorPool, PoolConfig
    from zerotir.sandbox.server import ServiceConfig
    from zerotir.train.learner import Learner


def default_threads() -> int:
    """CPUs this process may use (affinity/cgroup-aware where the OS says), at most 4: torch's own
    default (all cores) was 3-4x slower than one thread on a loaded 2-core machine."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


def apply_runtime(cfg: RunConfig, check_device: bool = True) -> int:
    """Process-wide settings every command applies first (train, eval, demo, toy pretrain, Ray actors):
    torch's CPU threads from `trainer.threads` (0: `default_threads()`), and a device check that fails
    with one line instead of a CUDA stack trace (`check_device=False` in a process that loads no model,
    the Ray driver). Returns the thread count set."""
    import torch

    device = cfg.trainer.device
    if check_device and device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={device}: CUDA is not available on this machine "
            f"(torch {torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA); "
            "use trainer.device=cpu"
        )
    n = cfg.trainer.threads or default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def tool_loop_config(cfg: RunConfig, max_tool_calls: int | None = None) -> ToolLoopConfig:
    r = cfg.rollout
    same = (
        "max_response_len",
        "output_max_tokens",
        "overflow",
        "exec_timeout_s",
        "error_lines",
        "stateful",
        "scheduler",
        "max_context_len",
        "exhausted_notice",
    )
    return ToolLoopConfig(
        max_tool_calls=r.max_tool_calls if max_tool_calls is None else max_tool_calls,
        sandbox_retries=cfg.sandbox.retries,
        **{k: getattr(r, k) for k in same},
    )


def make_tool(cfg: RunConfig) -> PythonTool:
    r = cfg.rollout
    return PythonTool(r.output_max_tokens, r.overflow, r.error_lines)


POOL_FIELDS = (
    "workers", "isolation", "memory_mb", "standby", "huge_pages", "light_worker", "numpy_worker",
    "memory_cgroup", "start_timeout_s", "max_timeout_s", "replay_timeout_s", "watchdog_grace_s",
    "watchdog_interval_s", "seccomp",
)  # fmt: skip
"""`sandbox.*` fields that are `PoolConfig` fields of the same name (`slots` is `slots_per_worker`)."""
SERVICE_FIELDS = {
    "default_timeout": "server_timeout_s", "max_queue": "server_max_queue", "max_sessions": "server_max_sessions",
    "max_body_bytes": "server_max_body_bytes", "dispatch_limit": "server_dispatch_limit",
    "queue_deadline_s": "server_queue_deadline_s", "session_max_blocks": "server_session_max_blocks",
    "session_max_bytes": "server_session_max_bytes", "session_ttl_s": "server_session_ttl_s",
}  # fmt: skip
"""`ServiceConfig` field -> the `sandbox.*` field it is built from."""


def pool_config(cfg: RunConfig) -> PoolConfig:
    from zerotir.sandbox.pool import PoolConfig

    s = cfg.sandbox
    return PoolConfig(slots_per_worker=s.slots, **{k: getattr(s, k) for k in POOL_FIELDS})


def make_pool(cfg: RunConfig) -> ExecutorPool:
    """The warm executor pool itself (what `LocalSandbox` wraps; the sandbox benchmarks time it bare)."""
    from zerotir.sandbox.pool import ExecutorPool

    return ExecutorPool(pool_config(cfg))


def service_config(cfg: RunConfig) -> ServiceConfig:
    """The service's limits (queue, bodies, dispatch, sessions) from `cfg.sandbox.server_*`."""
    from zerotir.sandbox.server import ServiceConfig

    return ServiceConfig(**{k: getattr(cfg.sandbox, v) for k, v in SERVICE_FIELDS.items()})


def make_sandbox(cfg: RunConfig, max_tool_calls: int | None = None) -> Sandbox | None:
    """None when the protocol never executes code (a no-tool template or a budget of 0)."""
    calls = cfg.rollout.max_tool_calls if max_tool_calls is None else max_tool_calls
    if not get_template(cfg.rollout.template).uses_tools or calls == 0:
        return None
    s = cfg.sandbox
    if s.mode == "http":
        from zerotir.sandbox.client import HttpSandbox

        sb = HttpSandbox(
            s.url,
            retries=s.client_retries,
            backoff_s=s.client_backoff_s,
            max_connections=s.client_max_connections,
            batch_size=s.client_batch_size,
        )
        try:
            sb.check_reachable()
        except ConnectionError as e:
            raise UsageError(
                f"sandbox.url: {e}; start one first (`zerotir sandbox serve --port PORT`) or use "
                "sandbox.mode=local"
            ) from None
        return sb
    from zerotir.sandbox.base import LocalSandbox

    return LocalSandbox(pool_config(cfg))


def make_engine(cfg: RunConfig, policy: Any, tokenizer: Any) -> Engine:
    """The rollout engine; the HF engine shares the learner's module (`policy`), vLLM loads its own."""
    if cfg.rollout.engine == "vllm":
        kw: dict[str, Any] = dict(
            dtype=cfg.model.dtype,
            gpu_memory_utilization=cfg.rollout.vllm_gpu_memory_utilization,
            seed=cfg.trainer.seed,
            sleep=cfg.rollout.vllm_sleep,
        )
        if cfg.rollout.vllm_async:
            from zerotir.rollout.vllm_async import AsyncVLLMEngine

            return AsyncVLLMEngine(cfg.model.path, tokenizer, **kw)
        from zerotir.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(cfg.model.path, tokenizer, **kw)
    from zerotir.rollout.hf_engine import HFEngine

    return HFEngine(policy, tokenizer, device=cfg.trainer.device)


def make_task(cfg: RunConfig, tokenizer: Any, reward_fn: RewardFn | None = None) -> MathTask:
    """`reward_fn` (a Python caller's) wins over `rollout.reward` (an import path in config)."""
    r = cfg.rollout
    if reward_fn is None and r.reward:
        reward_fn = load_reward(r.reward)
    return MathTask(
        get_template(r.template),
        tokenizer,
        reward_fn,
        allow_printed_answers=r.allow_printed_answers,
        multi_box=r.multi_box,
        timeout_s=r.grader_timeout_s,
        chat_template=r.chat_template,
    )


def load_rows(cfg: RunConfig, split: str) -> list[dict]:
    """`train` rows, or the held-out `eval` rows (empty when data.eval is unset)."""
    from zerotir.data import load_dataset_rows

    d = cfg.data
    if split == "train":
        return load_dataset_rows(
            d.train,
            d.problem_key,
            d.answer_key,
            toy_size=d.train_size,
            toy_easy_frac=d.easy_frac,
            toy_split="train",
            toy_chain_frac=d.chain_frac,
            toy_chain_style=d.chain_style,
        )
    if not d.eval:
        return []
    rows = load_dataset_rows(
        d.eval, d.problem_key, d.answer_key, toy_size=d.eval_size, toy_easy_frac=d.easy_frac, toy_split="test"
    )
    return rows[: d.eval_size]


def load_policy(cfg: RunConfig, model_src: str | None = None) -> tuple[Any, Any]:
    """(policy, tokenizer) from `model_src` (default `model.path`) in `model.dtype` on `trainer.device`."""
    from zerotir.models import load_causal_lm, load_tokenizer

    src = cfg.model.path if model_src is None else model_src
    tokenizer = load_tokenizer(src)
    return load_causal_lm(src, cfg.model.dtype, cfg.trainer.device), tokenizer


def sampling_params(cfg: RunConfig, seed: int | None, ignore_eos: bool = False) -> SamplingParams:
    """The rollout's sampling (`rollout.temperature`, `top_p`, `max_response_len`) with a seed."""
    r = cfg.rollout
    return SamplingParams(r.temperature, r.top_p, r.max_response_len, seed, ignore_eos=ignore_eos)


def build_learner(cfg: RunConfig, model_src: str) -> tuple[Learner, Any]:
    """(learner, tokenizer) from `model_src` (the config's model, or a checkpoint's policy/). The
    load order (policy, reference, critic) is fixed: the critic's head draws from the seeded RNG."""
    from zerotir.models import DTYPES, load_backbone, load_causal_lm
    from zerotir.train.batch import ValueModel
    from zerotir.train.learner import Learner

    m, device = cfg.model, cfg.trainer.device
    policy, tokenizer = load_policy(cfg, model_src)
    if m.gradient_checkpointing:
        policy.gradient_checkpointing_enable()  # type: ignore[operator]
    ref = None
    if cfg.algo.kl_coef > 0:
        ref = load_causal_lm(m.ref_path or m.path, m.dtype, device).eval()
        ref.requires_grad_(False)
    critic = None
    if cfg.algo.name == "ppo":
        backbone = load_backbone(m.critic_path or m.path, m.dtype, device)
        if m.gradient_checkpointing:
            backbone.gradient_checkpointing_enable()  # type: ignore[operator]
        hidden: int = backbone.config.hidden_size  # type: ignore[union-attr,assignment]
        critic = ValueModel(backbone, hidden).to(device=device, dtype=DTYPES[m.dtype])
    learner = Learner(
        cfg.algo,
        cfg.trainer,
        policy,
        pad_id=tokenizer.pad_token_id,
        temperature=cfg.rollout.temperature or 1.0,
        norm_len=cfg.rollout.max_response_len,
        ref=ref,
        critic=critic,
    )
    return learner, tokenizer


def make_sandbox_app(cfg: RunConfig) -> FastAPI:
    """The `zerotir sandbox serve` application for `cfg.sandbox` (pool, queue and session caps)."""
    from zerotir.sandbox.server import create_app

    return create_app(pool_config(cfg), service_config(cfg))
