"""Grading from token roles: injected output is unambiguous, and the answer comes from model tokens."""

import pytest

from zerotir.reward import (
    Role,
    Segment,
    answer_text,
    grade_trajectories,
    math_reward,
    segments_from_mask,
    segments_from_trajectory,
    trajectory_answer,
    trajectory_reward,
)
from zerotir.rollout.protocol import wrap_output
from zerotir.toy.tokenizer import build_byte_tokenizer
from zerotir.types import Trajectory

# Code that prints a closing fence, then a boxed answer: before, the printed ``` closed the injected
# ```output block, so the box after it passed for model text. (The code cannot write ``` itself:
# generation stops there.)
CODE = "```python\nprint('`' * 3 + '\\n' + chr(92) + 'boxed{5}')\n```"
PRINTED = "```\n\\boxed{5}"


def test_printed_fence_cannot_close_the_injected_block():
    text = CODE + wrap_output(PRINTED)
    assert math_reward(text, "5", require_outside_output=True) == 0.0
    assert math_reward(text + "So \\boxed{5}.", "5", require_outside_output=True) == 1.0


@pytest.mark.parametrize("body", ["", "plain", "``", "```", "a````b", "```\n````\n`````x"])
def test_output_fence_is_longer_than_any_backtick_run(body):
    wrapped = wrap_output(body)
    fence = wrapped[1 : wrapped.index("output")]
    assert set(fence) == {"`"} and len(fence) >= 3
    assert all(len(run) < len(fence) for run in body.split("\n") if set(run) == {"`"})
    assert wrapped == f"\n{fence}output\n{body}\n{fence}\n"
    if "```" not in body:
        assert fence == "```"  # the paper's format whenever the output allows it


def _trajectory(tok, parts: list[tuple[str, int]]) -> Trajectory:
    tr = Trajectory(prompt_ids=[])
    for text, mask in parts:
        ids = tok.encode(text, add_special_tokens=False)
        tr.response_ids += ids
        tr.action_mask += [mask] * len(ids)
    return tr


@pytest.fixture(scope="module")
def tok():
    return build_byte_tokenizer()


def test_answer_printed_by_a_tool_does_not_count_by_default(tok):
    tr = _trajectory(tok, [(CODE, 1), (wrap_output(PRINTED), 0), ("I am done.", 1)])
    segs = segments_from_trajectory(tr, tok)
    assert [s.role for s in segs] == [Role.MODEL, Role.TOOL, Role.MODEL]
    assert trajectory_answer(segs) is None
    assert trajectory_reward(segs, "5") == 0.0
    assert trajectory_reward(segs, "5", allow_printed_answers=True) == 1.0


def test_model_answer_after_tool_output_counts(tok):
    tr = _trajectory(
        tok, [(CODE, 1), (wrap_output("5"), 0), ("So the roots are \\boxed{-2} and \\boxed{1}.", 1)]
    )
    segs = segments_from_trajectory(tr, tok)
    assert trajectory_answer(segs) == "-2,1"
    assert trajectory_answer(segs, multi_box="last") == "1"
    assert grade_trajectories([tr, tr], ["1,-2", "1"], tok) == [1.0, 0.0]


def test_answer_inside_the_models_own_code_does_not_count():
    segs = [
        Segment("```python\nprint('\\\\boxed{5}')\n```", Role.MODEL),
        Segment("\n```output\n\n```\n", Role.TOOL),
    ]
    assert answer_text(segs) == ""
    assert trajectory_reward(segs, "5") == 0.0


def test_segments_from_mask_splits_runs_and_decodes_each():
    decode = lambda ids: "".join(chr(96 + i) for i in ids)  # noqa: E731
    segs = segments_from_mask([1, 2, 3, 4, 5, 6], [1, 1, 0, 0, 0, 1], decode)
    assert segs == [Segment("ab", Role.MODEL), Segment("cde", Role.TOOL), Segment("f", Role.MODEL)]
    assert segments_from_mask([], [], decode) == []


def test_segments_from_mask_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 response ids but 2 mask entries"):
        segments_from_mask([1, 2, 3], [1, 0], str)
