"""The orchestrator's per-step bookkeeping, as plain functions: score a step's groups, shape
overlong responses, compute advantages, guard against a failing sandbox, assemble the step's
timing metrics, and route SIGTERM/SIGINT to a stop flag while the loop runs.

They hold no state and touch no optimizer, engine or sandbox, so `Trainer` (and the distributed
driver that subclasses it) reads as the sequence of steps, and each step can be tested alone.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from zerotir import build
from zerotir.algos.estimators import ESTIMATORS, AdvantageInputs
from zerotir.algos.filters import GROUP_FILTERS, OVERLONG
from zerotir.config import AlgoConfig, RunConfig
from zerotir.errors import SandboxFailureAbort
from zerotir.eval.runner import BatchScore, evaluate_rows
from zerotir.rollout.engine import Engine, SamplingParams, capabilities_of
from zerotir.rollout.tools import Tool
from zerotir.sandbox.base import Sandbox
from zerotir.task import Task
from zerotir.train.learner import Advantages, LearnerBatch
from zerotir.types import FinishReason, Trajectory

log = logging.getLogger(__name__)


def score_groups(
    trajs: list[Trajectory], rewards: list[float], group_size: int, void_turn_filter: bool
) -> None:
    """Number the groups and set each trajectory's reward (graded by the caller: in process, or in the
    Ray driver's grading pool); with `void_turn_filter` a trajectory with a void turn is excluded after
    scoring."""
    for k, (tr, reward) in enumerate(zip(trajs, rewards, strict=True)):
        tr.group_id = k // group_size
        tr.reward = reward
        tr.correct = tr.reward >= 1.0
        if void_turn_filter and tr.meta.get("void_turn"):
            tr.excluded = True


def seed_all(seed: int) -> None:
    """Python's, numpy's and torch's global RNGs (what a resume then overwrites with the saved states)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def keep_groups(trajs: list[Trajectory], a: AlgoConfig, room: int) -> list[Trajectory]:
    """The trajectories of the groups `algo.filter` keeps, in order, at most `room` groups (a refilling
    filter stops once the step is full)."""
    G = a.group_size
    rewards = torch.tensor([tr.reward for tr in trajs])
    correct = torch.tensor([tr.correct for tr in trajs])
    keep = GROUP_FILTERS[a.filter].keep(rewards, correct, G, a.filter_low, a.filter_high)
    kept: list[Trajectory] = []
    for g in range(len(trajs) // G):
        if keep[g] and len(kept) < room * G:
            kept += trajs[g * G : (g + 1) * G]
    return kept


@dataclass
class StepCounts:
    """Which steps updated the policy: a filter that keeps no group skips the update, and a weak model
    on hard problems used to "train" for hours without one, silently."""

    trained: int = 0
    """Steps whose filter kept at least one group."""
    empty_in_a_row: int = 0
    """Consecutive steps, up to the last one, whose filter kept no group."""

    @classmethod
    def from_state(cls, state: dict) -> StepCounts:
        """From a checkpoint's trainer state (older checkpoints: every step trained)."""
        return cls(state.get("trained_steps", state["step"]), state.get("empty_in_a_row", 0))

    def state(self) -> dict[str, int]:
        return {"trained_steps": self.trained, "empty_in_a_row": self.empty_in_a_row}

    def record(self, step: int, updated: bool, a: AlgoConfig, groups_sampled: int) -> dict[str, float]:
        """Count the step; warn loudly when it updated nothing. Returns its metric."""
        if updated:
            self.trained, self.empty_in_a_row = self.trained + 1, 0
        else:
            self.empty_in_a_row += 1
            log.warning(
                "step %d: filter algo.filter=%s kept no group of %d sampled (accuracy band [%g, %g]): no "
                "update this step, %d step(s) in a row; a weak model on hard problems trains on nothing",
                step, a.filter, groups_sampled, a.filter_low, a.filter_high, self.empty_in_a_row,
            )  # fmt: skip
        return {"filter/empty_steps_in_a_row": float(self.empty_in_a_row)}

    def summarise(self, cfg: RunConfig, steps: int) -> None:
        """Say at the end how many steps updated the policy."""
        msg = f"{cfg.name}: {self.trained} of {steps} steps trained"
        if self.trained < steps:
            log.warning("%s; the others kept no group under algo.filter=%s", msg, cfg.algo.filter)
        else:
            log.info(msg)


def apply_overlong(trajs: list[Trajectory], a: AlgoConfig, max_response_len: int) -> None:
    """Penalise or exclude truncated responses by the configured overlong policy."""
    truncated = torch.tensor([tr.finish_reason == FinishReason.LENGTH for tr in trajs])
    lengths = torch.tensor([len(tr.response_ids) for tr in trajs])
    pen, exclude = OVERLONG[a.overlong](lengths, truncated, max_response_len, a.overlong_cache)
    for tr, cut, p, ex in zip(trajs, truncated.tolist(), pen, exclude.tolist()):
        if cut and ex:
            tr.excluded = True
        elif cut:
            tr.reward = (tr.reward or 0.0) + float(p)


def compute_advantages(a: AlgoConfig, lb: LearnerBatch) -> Advantages:
    """The registered estimator's advantages and returns for a prepared batch."""
    kl = lb.kl if a.kl_in_reward else None
    adv, returns = ESTIMATORS[a.name](
        AdvantageInputs(
            lb.rewards, lb.tokens.action_mask, a.group_size, kl,
            a.kl_coef if a.kl_in_reward else 0.0, lb.values, a.gamma, a.lam,
        )
    )  # fmt: skip
    return Advantages(adv, returns)


def check_sandbox_failures(cfg: RunConfig, step: int, sampled: list[Trajectory]) -> None:
    """Raise `SandboxFailureAbort` when more trajectories than the threshold hit sandbox failures:
    training on them would teach the model that code never runs."""
    fail = sum(tr.finish_reason == FinishReason.SANDBOX_ERROR for tr in sampled) / max(1, len(sampled))
    if fail > cfg.rollout.sandbox_fail_threshold:
        where = cfg.sandbox.url if cfg.sandbox.mode == "http" else "local pool"
        raise SandboxFailureAbort(
            f"step {step}: {fail:.0%} of trajectories hit sandbox infrastructure failures "
            f"(threshold {cfg.rollout.sandbox_fail_threshold:.0%}); is the sandbox at {where} healthy?"
        )


def time_metrics(
    timings: dict[str, float],
    t_roll: float,
    t_train: float,
    step_s: float,
    sampled: list[Trajectory],
    data_pos: int,
) -> dict[str, float]:
    """The step's `time/*`, `tokens/per_s` and `data/position` metrics."""
    n_tok = sum(len(tr.response_ids) for tr in sampled)
    return {
        "time/rollout_s": t_roll,
        "time/sandbox_s": timings.get("sandbox_s", 0.0),
        "time/generate_s": timings.get("generate_s", 0.0),
        "time/train_s": t_train,
        "time/step_s": step_s,
        "tokens/per_s": n_tok / max(step_s, 1e-9),
        "data/position": data_pos,
    }


def held_out_metrics(
    cfg: RunConfig, engine: Engine, sandbox: Sandbox | None, rows: list[dict], task: Task, tool: Tool,
    max_tool_calls: int | None = None, desc: str | None = None,
    score: BatchScore | None = None,
) -> dict[str, float]:  # fmt: skip
    """`eval/<set>/<metric>` on the held-out rows with the training protocol (template, exec timeout,
    output cap) and `eval.*` sampling; `max_tool_calls` overrides `eval.max_tool_calls` (budget sweeps);
    `eval.max_response_len` caps responses (else the rollout's); `score` as in `evaluate_rows`."""
    if not rows:
        return {}
    e = cfg.eval
    tool_cfg = build.tool_loop_config(cfg, e.max_tool_calls if max_tool_calls is None else max_tool_calls)
    length = e.max_response_len or cfg.rollout.max_response_len
    if length != tool_cfg.max_response_len:
        tool_cfg = replace(tool_cfg, max_response_len=length)
    seed = cfg.trainer.seed if e.seed is None else e.seed
    params = SamplingParams(e.temperature, e.top_p, length, seed=seed)
    res = evaluate_rows(engine, sandbox, rows, task.template, tool_cfg, params, n=e.n_samples,
                        batch_size=e.batch_size, task=task, tool=tool,
                        desc=desc if cfg.log.progress else None, score=score)  # fmt: skip
    name = Path(cfg.data.eval).stem if cfg.data.eval else "eval"
    return {f"eval/{name}/{k}": v for k, v in res["metrics"].items() if isinstance(v, (int, float))}


@contextmanager
def engine_asleep(engine: object) -> Iterator[None]:
    """Inside the block an engine that declares `capabilities.sleep` (vLLM with `rollout.vllm_sleep`)
    has its weights and KV cache offloaded, so the learner's update can use that memory; it wakes up
    however the block ends, before the weight sync that follows."""
    sleep = capabilities_of(engine).sleep
    if sleep:
        engine.sleep()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if sleep:
            engine.wake_up()  # type: ignore[attr-defined]
