"""Outcome rewards: final-answer extraction and verified equivalence, graded from model tokens."""

from zerotir.reward.boxed import MultiBox, extract_boxed, final_boxes, strip_output_blocks
from zerotir.reward.pool import GradingPool
from zerotir.reward.segments import (
    Role,
    Segment,
    answer_text,
    grade_trajectories,
    segments_from_mask,
    segments_from_trajectory,
    trajectory_answer,
    trajectory_reward,
)
from zerotir.reward.verify import answers_equivalent, grade_many, math_reward, normalize_answer

__all__ = [
    "MultiBox",
    "extract_boxed",
    "final_boxes",
    "strip_output_blocks",
    "GradingPool",
    "Role",
    "Segment",
    "answer_text",
    "grade_trajectories",
    "segments_from_mask",
    "segments_from_trajectory",
    "trajectory_answer",
    "trajectory_reward",
    "answers_equivalent",
    "math_reward",
    "grade_many",
    "normalize_answer",
]
