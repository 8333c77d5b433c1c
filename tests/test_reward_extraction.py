"""Final-answer extraction on adversarial text: linear time, bounded, fence-aware stripping."""

import pytest

from zerotir.reward import extract_boxed, strip_output_blocks


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
