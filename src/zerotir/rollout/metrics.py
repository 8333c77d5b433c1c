"""Per-batch rollout metrics, under the names every dashboard and the analysis read."""

from __future__ import annotations

from zerotir.types import Trajectory


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def rollout_metrics(trajs: list[Trajectory]) -> dict[str, float]:
    n = len(trajs)
    if n == 0:
        return {}
    calls = [t for tr in trajs for t in tr.tool_calls]
    correct = [tr for tr in trajs if tr.correct]
    return {
        "rollout/code_ratio": _mean([1.0 if tr.tool_calls else 0.0 for tr in trajs]),
        "rollout/tool_calls_mean": _mean([len(tr.tool_calls) for tr in trajs]),
        "rollout/tool_error_ratio": _mean([1.0 if c.status in ("error", "killed") else 0.0 for c in calls]),
        "rollout/tool_timeout_ratio": _mean([1.0 if c.status == "timeout" else 0.0 for c in calls]),
        "rollout/response_len_mean": _mean([tr.model_tokens for tr in trajs]),
        "rollout/total_len_mean": _mean([len(tr.response_ids) for tr in trajs]),
        "rollout/finish_length_ratio": _mean([1.0 if tr.finish_reason == "length" else 0.0 for tr in trajs]),
        "rollout/context_limited_ratio": _mean(
            [1.0 if tr.meta.get("context_limited") else 0.0 for tr in trajs]
        ),
        "rollout/sandbox_fail_ratio": _mean(
            [1.0 if tr.finish_reason == "sandbox_error" else 0.0 for tr in trajs]
        ),
        "rollout/void_turn_ratio": _mean([1.0 if tr.meta.get("void_turn") else 0.0 for tr in trajs]),
        "rollout/code_in_correct_ratio": _mean([1.0 if tr.tool_calls else 0.0 for tr in correct])
        if correct
        else 0.0,
        "reward/accuracy": _mean([1.0 if tr.correct else 0.0 for tr in trajs]),
        "reward/mean": _mean([tr.reward or 0.0 for tr in trajs]),
    }
