"""Grading from the token roles the rollout recorded: the answer comes from what the model wrote.

A trajectory's `action_mask` says, token by token, who wrote the response: 1 the model, 0 the
environment (injected tool output and notices). Re-parsing the decoded text for ```output fences
cannot tell them apart once code prints a fence of its own, and an answer printed by a tool then earns
reward (veRL PR #6392). So here the response is cut into contiguous runs of one role, each decoded on
its own, and by default the final answer is taken from the model's runs only, with the model's own
```python code left out (code is an action, not a stated answer). `allow_printed_answers=True` grades
the whole response text instead (config `reward.allow_printed_answers`, off by default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from zerotir.reward.boxed import MultiBox, extract_boxed, strip_output_blocks
from zerotir.reward.verify import math_reward

if TYPE_CHECKING:
    from zerotir.reward.pool import GradingPool
    from zerotir.types import Trajectory


class Role(str, Enum):
    """Who wrote a run of response tokens."""

    MODEL = "model"
    """Sampled by the policy (action_mask 1)."""
    TOOL = "tool"
    """Injected by the environment: execution output, notices (action_mask 0)."""


@dataclass(frozen=True)
class Segment:
    """A contiguous run of response tokens written by one role, decoded."""

    text: str
    role: Role


def segments_from_mask(
    response_ids: Sequence[int], action_mask: Sequence[int], decode: Callable[[list[int]], str]
) -> list[Segment]:
    """Cut the response into runs of equal mask value and decode each run separately.

    Args:
        response_ids: the response tokens (model and injected), in order.
        action_mask: 1 where the model sampled the token, 0 where the environment injected it.
        decode: ids -> text, e.g. `tokenizer.decode`.
    """
    if len(response_ids) != len(action_mask):
        raise ValueError(f"{len(response_ids)} response ids but {len(action_mask)} mask entries")
    out: list[Segment] = []
    start = 0
    for i in range(1, len(response_ids) + 1):
        if i == len(response_ids) or action_mask[i] != action_mask[start]:
            role = Role.MODEL if action_mask[start] else Role.TOOL
            out.append(Segment(decode(list(response_ids[start:i])), role))
            start = i
    return out


def segments_from_trajectory(traj: Trajectory, tokenizer) -> list[Segment]:
    """`segments_from_mask` on a trajectory's response ids and action mask."""
    return segments_from_mask(traj.response_ids, traj.action_mask, tokenizer.decode)


def answer_text(segments: Sequence[Segment], *, allow_printed_answers: bool = False) -> str:
    """The text the final answer is looked for in: the model's runs without their ```python code
    (joined by newlines, so no box spans an injected block), or with `allow_printed_answers` the
    whole response as it was shown to the model."""
    if allow_printed_answers:
        return "".join(s.text for s in segments)
    return "\n".join(strip_output_blocks(s.text, outputs=False) for s in segments if s.role is Role.MODEL)


def trajectory_answer(
    segments: Sequence[Segment],
    *,
    allow_printed_answers: bool = False,
    multi_box: MultiBox | str = MultiBox.ALL,
) -> str | None:
    r"""The final `\boxed{}` answer of a trajectory (None if there is none), for maj@k and logs."""
    return extract_boxed(answer_text(segments, allow_printed_answers=allow_printed_answers), multi_box)


def trajectory_reward(
    segments: Sequence[Segment],
    answer: str,
    *,
    allow_printed_answers: bool = False,
    multi_box: MultiBox | str = MultiBox.ALL,
    no_answer_reward: float = 0.0,
    timeout_s: float | None = 5,
) -> float:
    r"""1.0 if the trajectory's final answer (model-written by default) is equivalent to `answer`.

    >>> segs = [Segment("```python\nprint(r'\\boxed{5}')\n```", Role.MODEL),
    ...         Segment("\n```output\n\\boxed{5}\n```\n", Role.TOOL)]
    >>> trajectory_reward(segs, "5"), trajectory_reward(segs, "5", allow_printed_answers=True)
    (0.0, 1.0)
    >>> trajectory_reward(segs + [Segment("So \\boxed{5}.", Role.MODEL)], "5")
    1.0
    """
    return math_reward(
        answer_text(segments, allow_printed_answers=allow_printed_answers),
        answer,
        no_answer_reward=no_answer_reward,
        timeout_s=timeout_s,
        multi_box=multi_box,
    )


def grade_trajectories(
    trajs: Sequence[Trajectory],
    answers: Sequence[str],
    tokenizer,
    *,
    pool: GradingPool | None = None,
    allow_printed_answers: bool = False,
    multi_box: MultiBox | str = MultiBox.ALL,
    timeout_s: float = 5.0,
) -> list[float]:
    """Rewards of a batch of trajectories, from their token roles; in `pool` when given (safe off
    the main thread, stuck graders killed), else in-process."""
    texts = [
        answer_text(segments_from_trajectory(t, tokenizer), allow_printed_answers=allow_printed_answers)
        for t in trajs
    ]
    if pool is not None:
        return pool.grade(texts, list(answers), multi_box=multi_box)
    return [math_reward(x, a, timeout_s=timeout_s, multi_box=multi_box) for x, a in zip(texts, answers)]
