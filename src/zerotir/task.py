"""The `Task` seam: how a data row becomes a prompt and how a finished trajectory is scored.

Training and evaluation share it (and `sample_rows`, the render -> rollout -> attach-answer step),
so a custom task or reward changes both at once. `MathTask` is the ZeroTIR task: the template's
prompt, the verified math reward on the final \\boxed{} answer, or a custom
`reward(response_text, answer) -> float` named in config (`rollout.reward: module:function`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from zerotir.reward import MultiBox, segments_from_trajectory, trajectory_answer, trajectory_reward
from zerotir.rollout.chat import ChatTemplateMode
from zerotir.rollout.chat import prompt_ids as chat_prompt_ids
from zerotir.rollout.engine import Engine, SamplingParams
from zerotir.rollout.protocol import Template
from zerotir.rollout.tool_loop import ToolLoopConfig, run_tool_rollout
from zerotir.rollout.tools import Tool
from zerotir.types import Trajectory

RewardFn = Callable[[str, str], float]


@runtime_checkable
class Task(Protocol):
    template: Template
    """The prompt template; its `uses_tools` and stop strings shape the rollout."""

    def prompt_ids(self, row: dict) -> list[int]:
        """Token ids of the prompt for one data row."""
        ...

    def score(self, traj: Trajectory) -> float:
        """The outcome reward of a finished trajectory (`traj.answer` holds the row's answer)."""
        ...

    def answer(self, traj: Trajectory) -> str | None:
        """The final answer `score` grades, or None (maj@k votes on it)."""
        ...


@dataclass
class MathTask:
    template: Template
    tokenizer: Any
    reward_fn: RewardFn | None = None
    """Replaces the verified math reward when set."""
    allow_printed_answers: bool = False
    """Count a \\boxed answer printed by executed code too (default: only the model's own tokens)."""
    multi_box: MultiBox | str = MultiBox.ALL
    """Several final boxes: all as a set/tuple (math-verify's grouping) or the last one."""
    timeout_s: float = 5.0
    """Budget for extracting and verifying one answer."""
    chat_template: ChatTemplateMode | str = ChatTemplateMode.AUTO
    """Raw template text, or its instruction inside the tokenizer's chat template (rollout/chat.py)."""

    def prompt_ids(self, row: dict) -> list[int]:
        return chat_prompt_ids(self.template, row["problem"], self.tokenizer, self.chat_template)

    def score(self, traj: Trajectory) -> float:
        if self.reward_fn is not None:
            return float(self.reward_fn(traj.text, traj.answer))
        # The answer is read from the tokens the model sampled (the action mask), never re-parsed
        # from the text: printed output cannot close a block early or supply the answer.
        return trajectory_reward(
            segments_from_trajectory(traj, self.tokenizer),
            traj.answer,
            allow_printed_answers=self.allow_printed_answers,
            multi_box=self.multi_box,
            timeout_s=self.timeout_s,
        )

    def answer(self, traj: Trajectory) -> str | None:
        """The final answer `score` grades (for maj@k and logs)."""
        return trajectory_answer(
            segments_from_trajectory(traj, self.tokenizer),
            allow_printed_answers=self.allow_printed_answers,
            multi_box=self.multi_box,
        )


def _import_from_cwd_too(mod_name: str) -> ModuleType:
    """Import `mod_name`, also from the current directory: the installed `zerotir` command does not put
    it on `sys.path` (as `python -m` would), so `rollout.reward=myreward:score` next to the user's data
    failed with ModuleNotFoundError."""
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if e.name != mod_name.split(".")[0] or cwd in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(mod_name)


def check_task_names(template: str, reward: str | None) -> None:
    """The prompt template and the reward function a config names exist: checked by the CLI
    before any model loads (a typo used to surface as a traceback after the model had loaded)."""
    from zerotir.errors import UsageError
    from zerotir.rollout.protocol import get_template

    try:
        get_template(template)
    except KeyError as e:
        raise UsageError(f"rollout.template: {e.args[0]}") from None
    if reward:
        try:
            load_reward(reward)
        except ValueError as e:
            raise UsageError(str(e)) from None


def load_reward(path: str) -> RewardFn:
    """`package.module:function` -> the function, with a clear error when it is not there."""
    mod_name, sep, fn_name = path.partition(":")
    if not sep or not mod_name or not fn_name:
        raise ValueError(f"rollout.reward={path!r}: expected `module:function`")
    try:
        fn = getattr(_import_from_cwd_too(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"rollout.reward={path!r}: cannot import it ({e})") from e
    if not callable(fn):
        raise ValueError(f"rollout.reward={path!r} is not callable")
    return fn


def sample_rows(
    task: Task,
    engine: Engine,
    sandbox: Any,
    rows: list[dict],
    tool_cfg: ToolLoopConfig,
    params: SamplingParams,
    timings: dict[str, float] | None = None,
    tool: Tool | None = None,
) -> list[Trajectory]:
    """One trajectory per row (repeat rows for groups), each carrying its row's answer; not scored
    (training zeroes excluded trajectories, evaluation does not)."""
    prompts = [task.prompt_ids(r) for r in rows]
    trajs = run_tool_rollout(engine, sandbox, prompts, task.template, tool_cfg, params, timings, tool)
    for tr, row in zip(trajs, rows):
        tr.answer = row["answer"]
    return trajs
