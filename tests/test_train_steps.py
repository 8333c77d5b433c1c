"""The orchestrator's per-step helpers (`zerotir.train.steps`) on their own, without a model."""

import signal

import pytest

from zerotir import console
from zerotir.config import AlgoConfig, build_config
from zerotir.errors import SandboxFailureAbort
from zerotir.train.steps import (
    apply_overlong,
    check_sandbox_failures,
    score_groups,
    time_metrics,
)
from zerotir.types import FinishReason, Trajectory

pytestmark = pytest.mark.unit


class _LenTask:
    """Scores a trajectory 1.0 when its response has two tokens."""

    def score(self, tr: Trajectory) -> float:
        return 1.0 if len(tr.response_ids) == 2 else 0.0


def test_score_groups_numbers_groups_scores_and_drops_void_turns_after_scoring():
    trajs = [
        Trajectory([0], [1, 2]),
        Trajectory([0], [1]),
        Trajectory([0], [1, 2], excluded=True),
        Trajectory([0]),
    ]
    trajs[3].meta["void_turn"] = True
    rewards = [0.0 if tr.excluded else _LenTask().score(tr) for tr in trajs]  # as Trainer.score grades
    score_groups(trajs, rewards, group_size=2, void_turn_filter=True)
    assert [tr.group_id for tr in trajs] == [0, 0, 1, 1]
    assert [tr.reward for tr in trajs] == [1.0, 0.0, 0.0, 0.0]
    assert [tr.correct for tr in trajs] == [True, False, False, False]
    assert [tr.excluded for tr in trajs] == [False, False, True, True]


def test_apply_overlong_masks_or_penalises_only_truncated_responses():
    cut, done = (
        Trajectory([0], [1] * 4, finish_reason=FinishReason.LENGTH, reward=1.0),
        Trajectory([0], [1], reward=1.0),
    )
    apply_overlong([cut, done], AlgoConfig(overlong="mask"), max_response_len=4)
    assert (cut.excluded, done.excluded) == (True, False)
    cut = Trajectory([0], [1] * 4, finish_reason=FinishReason.LENGTH, reward=1.0)
    apply_overlong([cut, done], AlgoConfig(overlong="soft", overlong_cache=2), max_response_len=4)
    assert cut.reward < 1.0 and not cut.excluded and done.reward == 1.0


def test_check_sandbox_failures_raises_only_over_the_threshold():
    cfg = build_config(overrides=["rollout.sandbox_fail_threshold=0.5"])
    bad, ok = Trajectory([0], finish_reason=FinishReason.SANDBOX_ERROR), Trajectory([0])
    check_sandbox_failures(cfg, 3, [bad, ok])
    with pytest.raises(SandboxFailureAbort, match="step 3: 67%"):
        check_sandbox_failures(cfg, 3, [bad, bad, ok])


def test_time_metrics_counts_tokens_per_second_of_the_step():
    m = time_metrics({"sandbox_s": 0.5}, 1.0, 2.0, 4.0, [Trajectory([0], [1, 2, 3]), Trajectory([0], [1])], 7)
    assert m["tokens/per_s"] == 1.0 and m["time/sandbox_s"] == 0.5 and m["time/generate_s"] == 0.0
    assert m["data/position"] == 7


def test_stop_signals_routes_sigterm_inside_the_block_and_restores_the_old_handler():
    seen: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    with console.stop_signals(lambda signum, _frame: seen.append(signum)):
        signal.raise_signal(signal.SIGTERM)
    assert seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before
