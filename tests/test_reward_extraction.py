"""Final-answer extraction on adversarial text: linear time, bounded, fence-aware stripping."""

import pytest

from zerotir.reward import extract_boxed, math_reward, strip_output_blocks


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "text,expected",
    [
        ("\\boxed{" * 20_000, None),  # quadratic before: over 60 s
        ("\\boxed{" * 20_000 + "\\boxed{7}", "7"),
        ("\\boxed{" * 20_000 + "}" * 20_000, ""),  # 20,000 nested boxes: the innermost is last
        ("\\boxed 9" * 30_000, "9"),
    ],
)
def test_extraction_is_linear_on_adversarial_boxes(text, expected):
    assert extract_boxed(text) == expected
    assert extract_boxed(text, multi_box="all") is not None or expected is None


def test_extraction_bounds_answer_and_text_length():
    from zerotir.reward.boxed import MAX_ANSWER_CHARS, MAX_TEXT_CHARS

    assert extract_boxed("\\boxed{" + "1" * (MAX_ANSWER_CHARS + 1) + "}") is None
    assert extract_boxed("\\boxed{" + "1" * MAX_ANSWER_CHARS + "}") == "1" * MAX_ANSWER_CHARS
    assert extract_boxed("x" * (2 * MAX_TEXT_CHARS) + "\\boxed{5}") == "5"
    assert extract_boxed("\\boxed{5}" + "x" * MAX_TEXT_CHARS) is None  # only the tail is read


def test_printed_fence_does_not_close_a_longer_output_fence():
    text = "```python\nprint('```')\n```\n````output\n```\n\\boxed{5}\n````\nno answer here"
    assert extract_boxed(strip_output_blocks(text)) is None
    assert extract_boxed(text) == "5"


def test_strip_keeps_model_text_between_blocks():
    text = "a ```python\nx=1\n``` b\n```output\n1\n```\nc \\boxed{2}"
    assert strip_output_blocks(text) == "a  b\n\nc \\boxed{2}"
    assert strip_output_blocks(text, outputs=False) == "a  b\n```output\n1\n```\nc \\boxed{2}"


@pytest.mark.timeout(30)
def test_stripping_is_linear_with_many_blocks_of_one_kind():
    """The next opening of the absent kind was searched for again on every block: 224 KB of python
    blocks with no output block took 26 s, and `math_reward(require_outside_output=True)` scored the
    right answer 0 at its deadline (red-team review of issue 15). This text is twice as long."""
    code = "```python\n```\n" * 32_000 + "\\boxed{5}"
    assert strip_output_blocks(code) == "\n" * 32_000 + "\\boxed{5}"
    assert math_reward(code, "5", require_outside_output=True, timeout_s=None) == 1.0
    outputs = "```output\n1\n```\n" * 32_000 + "\\boxed{6}"
    assert strip_output_blocks(outputs) == "\n" * 32_000 + "\\boxed{6}"
