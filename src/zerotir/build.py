"""The one translation from a `RunConfig` to objects: engine, sandbox, tool, task, learner, rows.

Training, evaluation, the demo, toy pre-training and the benchmarks all build through here, so a
config field means the same thing everywhere (the eval of a checkpoint runs the protocol it was
trained with: template, budget, exec timeout, output cap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zerotir.config import RunConfig
from zerotir.rollout.protocol import get_template
from zerotir.rollout.tool_loop import ToolLoopConfig
from zerotir.rollout.tools import PythonTool
from zerotir.task import MathTask, RewardFn, load_reward

if TYPE_CHECKING:  # heavy or optional imports stay lazy at run time
    from fastapi import FastAPI

    from zerotir.rollout.engine import Engine
    from zerotir.sandbox.base import Sandbox
    from zerotir.sandbox.pool import PoolConfig
    from zerotir.train.learner import Learner


def tool_loop_config(cfg: RunConfig, max_tool_calls: int | None = None) -> ToolLoopConfig:
    r = cfg.rollout
    same = ("max_response_len", "output_max_tokens", "overflow", "exec_timeout_s", "error_lines", "stateful", "scheduler")
    return ToolLoopConfig(
        max_tool_calls=r.max_tool_calls if max_tool_calls is None else max_tool_calls,
        sandbox_retries=cfg.sandbox.retries,
        **{k: getattr(r, k) for k in same},
    )


def make_tool(cfg: RunConfig) -> PythonTool:
    r = cfg.rollout
    return PythonTool(r.output_max_tokens, r.overflow, r.error_lines)


def pool_config(cfg: RunConfig) -> PoolConfig:
    from zerotir.sandbox.pool import PoolConfig

    s = cfg.sandbox
    same = ("workers", "isolation", "memory_mb", "standby", "huge_pages", "light_worker", "seccomp")
    return PoolConfig(slots_per_worker=s.slots, **{k: getattr(s, k) for k in same})


def make_sandbox(cfg: RunConfig, max_tool_calls: int | None = None) -> Sandbox | None:
    """None when the protocol never executes code (a no-tool template or a budget of 0)."""
    calls = cfg.rollout.max_tool_calls if max_tool_calls is None else max_tool_calls
    if not get_template(cfg.rollout.template).uses_tools or calls == 0:
        return None
    s = cfg.sandbox
    if s.mode == "http":
        from zerotir.sandbox.client import HttpSandbox

        return HttpSandbox(
            s.url,
            retries=s.client_retries,
            backoff_s=s.client_backoff_s,
            max_connections=s.client_max_connections,
            batch_size=s.client_batch_size,
        )
    from zerotir.sandbox.base import LocalSandbox

    return LocalSandbox(pool_config(cfg))


def make_engine(cfg: RunConfig, policy: Any, tokenizer: Any) -> Engine:
    """The rollout engine; the HF engine shares the learner's module (`policy`), vLLM loads its own."""
    if cfg.rollout.engine == "vllm":
        kw: dict[str, Any] = dict(
            dtype=cfg.model.dtype,
            gpu_memory_utilization=cfg.rollout.vllm_gpu_memory_utilization,
            seed=cfg.trainer.seed,
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
    )


def load_rows(cfg: RunConfig, split: str) -> list[dict]:
    """`train` rows, or the held-out `eval` rows (empty when data.eval is unset)."""
    from zerotir.data import load_dataset_rows

    d = cfg.data
    if split == "train":
        return load_dataset_rows(
            d.train, d.problem_key, d.answer_key, toy_size=d.train_size, toy_easy_frac=d.easy_frac, toy_split="train"
        )
    if not d.eval:
        return []
    rows = load_dataset_rows(
        d.eval, d.problem_key, d.answer_key, toy_size=d.eval_size, toy_easy_frac=d.easy_frac, toy_split="test"
    )
    return rows[: d.eval_size]


def build_learner(cfg: RunConfig, model_src: str) -> tuple[Learner, Any]:
    """(learner, tokenizer) from `model_src` (the config's model, or a checkpoint's policy/). The
    load order (policy, reference, critic) is fixed: the critic's head draws from the seeded RNG."""
    from zerotir.models import load_causal_lm, load_tokenizer, resolve_model_path
    from zerotir.train.batch import ValueModel
    from zerotir.train.learner import Learner

    m, device = cfg.model, cfg.trainer.device
    tokenizer = load_tokenizer(model_src)
    policy = load_causal_lm(model_src, m.dtype, device)
    if m.gradient_checkpointing:
        policy.gradient_checkpointing_enable()  # type: ignore[operator]
    ref = None
    if cfg.algo.kl_coef > 0:
        ref = load_causal_lm(m.ref_path or m.path, m.dtype, device).eval()
        ref.requires_grad_(False)
    critic = None
    if cfg.algo.name == "ppo":
        from transformers import AutoModel

        backbone = AutoModel.from_pretrained(resolve_model_path(m.critic_path or m.path))
        critic = ValueModel(backbone, backbone.config.hidden_size).to(device)
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

    s = cfg.sandbox
    return create_app(
        pool_config(cfg),
        default_timeout=s.server_timeout_s,
        max_queue=s.server_max_queue,
        max_sessions=s.server_max_sessions,
    )
