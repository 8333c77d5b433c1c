"""Outcome rewards: final-answer extraction and verified equivalence."""

from zerotir.reward.boxed import MultiBox, extract_boxed, final_boxes, strip_output_blocks
from zerotir.reward.pool import GradingPool
from zerotir.reward.verify import answers_equivalent, grade_many, math_reward, normalize_answer

__all__ = [
    "MultiBox",
    "extract_boxed",
    "final_boxes",
    "strip_output_blocks",
    "GradingPool",
    "answers_equivalent",
    "math_reward",
    "grade_many",
    "normalize_answer",
]
