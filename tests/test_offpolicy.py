"""Off-policy corrections (algos/offpolicy.py) against hand-computed numbers."""

import math

import pytest
import torch

from zerotir.algos.losses import policy_loss
from zerotir.algos.offpolicy import OffPolicy, off_policy_correction

pytestmark = pytest.mark.unit

# one row, three tokens, the last one injected (mask 0); trainer/rollout ratios e^0.5, e^-1, -
ROLL = torch.tensor([[-1.0, -0.5, 0.0]])
TRAIN = torch.tensor([[-0.5, -1.5, -3.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0]])
E5, EM1 = math.exp(0.5), math.exp(-1.0)


def test_on_policy_and_behaviour_weight_one_and_pick_the_denominator():
    on = off_policy_correction("on_policy", ROLL, TRAIN, MASK)
    assert torch.equal(on.old_logprobs, TRAIN) and torch.equal(on.weights, MASK)
    assert torch.equal(off_policy_correction("on_policy", ROLL, None, MASK).old_logprobs, ROLL)
    b = off_policy_correction(OffPolicy.BEHAVIOUR, ROLL, TRAIN, MASK)
    assert torch.equal(b.old_logprobs, ROLL) and torch.equal(b.weights, MASK) and torch.equal(b.mask, MASK)
    assert b.metrics["is/weight_max"] == pytest.approx(E5)
    assert b.metrics["is/weight_min"] == pytest.approx(EM1)
    assert b.metrics["is/weight_mean"] == pytest.approx((E5 + EM1) / 2)


def test_tis_truncates_at_the_cap():
    c = off_policy_correction("tis", ROLL, TRAIN, MASK, cap=1.5)
    assert torch.equal(c.old_logprobs, TRAIN)
    assert c.weights.tolist()[0] == pytest.approx([1.5, EM1, 0.0])  # e^0.5 = 1.65 > 1.5
    assert torch.equal(c.mask, MASK)
    assert c.metrics["is/capped_frac"] == pytest.approx(0.5)


def test_decoupled_keeps_the_raw_weight_and_masks_tokens_over_the_cap():
    c = off_policy_correction("decoupled", ROLL, TRAIN, MASK, cap=1.5)
    assert c.weights.tolist()[0] == pytest.approx([0.0, EM1, 0.0])
    assert c.mask.tolist() == [[0.0, 1.0, 0.0]]
    wide = off_policy_correction("decoupled", ROLL, TRAIN, MASK, cap=10.0)
    assert wide.weights.tolist()[0] == pytest.approx([E5, EM1, 0.0])


def test_weighting_the_advantage_weights_the_clipped_surrogate():
    # w * min(rA, clip(r)A) == min(r wA, clip(r) wA) for w >= 0: checked through the real loss
    lp = torch.tensor([[-0.2, -1.0]])
    old = torch.tensor([[-0.5, -0.4]])
    adv = torch.tensor([[1.0, -2.0]])
    w = torch.tensor([[0.3, 1.7]])
    m = torch.ones(1, 2)
    kw = dict(agg="token-mean", clip_low=0.2, clip_high=0.2, dual_clip=3.0)
    per_tok = [float(policy_loss(lp, old, adv, torch.eye(2)[j : j + 1], **kw).loss) for j in range(2)]
    folded = policy_loss(lp, old, adv * w, m, **kw)
    assert float(folded.loss) == pytest.approx((per_tok[0] * 0.3 + per_tok[1] * 1.7) / 2)
    # token 0: r = e^0.3 > 1.2, A > 0 -> -1.2; token 1: r = e^-0.6 < 0.8, A < 0 -> the clipped -0.8A
    assert per_tok == pytest.approx([-1.2, 1.6])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="recomputed"):
        off_policy_correction("tis", ROLL, None, MASK)
    with pytest.raises(ValueError, match="cap"):
        off_policy_correction("tis", ROLL, TRAIN, MASK, cap=0)
    with pytest.raises(ValueError):
        off_policy_correction("nope", ROLL, TRAIN, MASK)


def test_config_refuses_staleness_without_a_chosen_correction():
    from zerotir.config import ConfigError, build_config

    for bad in (
        ["distributed.max_staleness=1"],
        ["distributed.max_staleness=2", "distributed.off_policy=on_policy"],
    ):
        with pytest.raises((ConfigError, ValueError), match="off_policy"):
            build_config("toy-zerotir", overrides=bad)
    with pytest.raises((ConfigError, ValueError), match="partial_rollouts"):
        build_config("toy-zerotir", overrides=["distributed.partial_rollouts=true"])
    ok = build_config(
        "toy-zerotir", overrides=["distributed.max_staleness=2", "distributed.off_policy=decoupled"]
    )
    assert ok.distributed.off_policy == "decoupled"


class _Recorder:
    """A stand-in `Learner` that keeps what the correction hands it."""

    def prepare(self, trajs, recompute):
        self.recompute = recompute

    def train_on_batch(self, lb, adv):
        self.lb, self.adv = lb, adv
        return {"train/policy_loss": 0.0}


def _batch():
    from zerotir.train.batch import TokenBatch
    from zerotir.train.learner import Advantages, LearnerBatch

    z = torch.zeros(1, 3, dtype=torch.long)
    tb = TokenBatch(z, z, torch.zeros(1, dtype=torch.long), MASK.clone(), z, ROLL.clone(), TRAIN.clone())
    return LearnerBatch(tb, torch.zeros(1)), Advantages(torch.tensor([[2.0, 2.0, 0.0]]))


@pytest.mark.parametrize(
    "method, denominator, adv",
    [("on_policy", TRAIN, [2.0, 2.0, 0.0]), ("behaviour", ROLL, [2.0, 2.0, 0.0]),
     ("tis", TRAIN, [3.0, 2 * EM1, 0.0]), ("decoupled", TRAIN, [0.0, 2 * EM1, 0.0])],
)  # fmt: skip
def test_the_corrected_learner_hands_the_update_the_chosen_denominator_and_weighted_advantages(
    method, denominator, adv
):
    from zerotir.distributed.correction import CorrectedLearner

    inner = _Recorder()
    cl = CorrectedLearner(inner, method, cap=1.5)
    cl.prepare([], recompute=False)
    assert inner.recompute == (method in ("tis", "decoupled"))
    lb, a = _batch()
    metrics = cl.train_on_batch(lb, a)
    assert torch.equal(inner.lb.tokens.old_logprobs, denominator)
    assert inner.adv.advantages.tolist()[0] == pytest.approx(adv)
    assert ("is/weight_mean" in metrics) == (method != "on_policy")
