"""`rl_loss` and the registries, against numbers computed by hand."""

import math

import pytest
import torch

from zerotir.algos.filters import GROUP_FILTERS, OVERLONG
from zerotir.algos.loss import POLICY_LOSSES, LossInputs, LossSettings, logprob_mismatch, rl_loss

pytestmark = pytest.mark.unit


def _inputs(settings, **kw):
    # two sequences, two tokens; the second token of row 1 is injected (mask 0)
    lp = torch.tensor([[math.log(0.5), math.log(0.25)], [math.log(0.5), 0.0]])
    old = torch.tensor([[math.log(0.5), math.log(0.5)], [math.log(0.25), 0.0]])
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    return LossInputs(lp, old, adv, mask, settings, **kw)


def test_policy_term_alone():
    # ratios: 1, 0.5, 2 on the three action tokens; clip [0.8, 1.2]
    # A=+1: max(-1·1, -1·1) = -1; max(-0.5, -0.8) = -0.5; A=-1, r=2: max(2, 1.2) = 2
    out = rl_loss(_inputs(LossSettings(clip_low=0.2, clip_high=0.2)))
    assert out.loss.item() == pytest.approx((-1 - 0.5 + 2) / 3, abs=1e-6)
    assert out.metrics["policy_loss"].item() == pytest.approx(0.5 / 3, abs=1e-6)
    assert out.metrics["ratio_max"].item() == pytest.approx(2.0, abs=1e-6)
    # a token counts as clipped when the clipped term wins (surr2 > surr1): (-1, -1), (-0.5, -0.8), (2, 1.2)
    assert out.metrics["clip_ratio"].item() == 0.0
    assert "kl" not in out.metrics and "entropy" not in out.metrics


def test_kl_term_added_only_in_loss_mode():
    ref = torch.tensor([[math.log(0.5), math.log(0.5)], [math.log(0.5), 0.0]])
    # k1 per action token: 0, log(0.5), 0 -> token mean log(0.5)/3
    kl = math.log(0.5) / 3
    s = LossSettings(clip_low=0.2, clip_high=0.2, kl_coef=0.1, kl_estimator="k1")
    out = rl_loss(_inputs(s, ref_logprobs=ref))
    assert out.metrics["kl"].item() == pytest.approx(kl, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.5 / 3 + 0.1 * kl, abs=1e-6)
    s_reward = LossSettings(clip_low=0.2, clip_high=0.2, kl_coef=0.1, kl_estimator="k1", kl_in_loss=False)
    out = rl_loss(_inputs(s_reward, ref_logprobs=ref))
    assert out.loss.item() == pytest.approx(0.5 / 3, abs=1e-6)  # measured, not added
    assert out.metrics["kl"].item() == pytest.approx(kl, abs=1e-6)


def test_entropy_bonus_and_graph():
    # uniform logits over 4 tokens: entropy log 4 everywhere
    logits = torch.zeros(2, 2, 4, requires_grad=True)
    s = LossSettings(clip_low=0.2, clip_high=0.2, entropy_coef=0.01)
    out = rl_loss(_inputs(s, logits=logits))
    assert out.metrics["entropy"].item() == pytest.approx(math.log(4), abs=1e-6)
    assert out.loss.item() == pytest.approx(0.5 / 3 - 0.01 * math.log(4), abs=1e-6)
    assert out.loss.requires_grad and not out.metrics["entropy"].requires_grad
    measured = rl_loss(_inputs(LossSettings(clip_low=0.2, clip_high=0.2), logits=logits))
    assert measured.loss.item() == pytest.approx(0.5 / 3, abs=1e-6)


def test_unknown_policy_loss_is_named():
    with pytest.raises(ValueError, match="registered: \\['clip'\\]"):
        rl_loss(_inputs(LossSettings(policy_loss="nope")))
    assert set(POLICY_LOSSES) == {"clip"}


def test_logprob_mismatch():
    rollout = torch.tensor([[-1.0, -2.0, 0.0]])
    trainer = torch.tensor([[-1.0, -1.5, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    m = logprob_mismatch(rollout, trainer, mask)
    # k3 with d = rollout - trainer: exp(-d) + d - 1 = 0 and exp(0.5) - 0.5 - 1; masked third ignored
    assert m["mismatch_kl"].item() == pytest.approx((math.exp(0.5) - 1.5) / 2, abs=1e-6)
    assert m["mismatch_max_abs"].item() == pytest.approx(0.5)
    same = logprob_mismatch(rollout, rollout.clone(), mask)
    assert same["mismatch_kl"].item() == 0.0 and same["mismatch_max_abs"].item() == 0.0


def test_group_filters():
    G = 2
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    correct = rewards.bool()
    assert GROUP_FILTERS["none"].keep(rewards, correct, G, 0.2, 0.8).tolist() == [True, True, True]
    assert GROUP_FILTERS["accuracy_band"].keep(rewards, correct, G, 0.2, 0.8).tolist() == [False, True, False]
    assert GROUP_FILTERS["dynamic"].keep(rewards, correct, G, 0.2, 0.8).tolist() == [False, True, False]
    assert GROUP_FILTERS["dynamic"].refill and not GROUP_FILTERS["accuracy_band"].refill


def test_overlong_registry():
    lengths = torch.tensor([10, 100, 90])
    cut = torch.tensor([False, True, True])
    pen, ex = OVERLONG["soft"](lengths, cut, 100, 20)
    # start = 80: 100 -> -1, 90 -> -0.5; the uncut one gets nothing
    assert pen.tolist() == pytest.approx([0.0, -1.0, -0.5]) and not ex.any()
    pen, ex = OVERLONG["mask"](lengths, cut, 100, 20)
    assert ex.tolist() == [False, True, True] and not pen.any()
    pen, ex = OVERLONG["none"](lengths, cut, 100, 20)
    assert not pen.any() and not ex.any()
