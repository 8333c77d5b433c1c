"""Advantages, losses and filters against values computed by hand (derivations in comments)."""

import math

import pytest
import torch

from zerotir.algos import (
    accuracy_band_keep,
    aggregate,
    discounted_returns,
    gae,
    grpo_advantages,
    kl_penalty,
    masked_whiten,
    nonuniform_keep,
    policy_loss,
    reinforce_pp_advantages,
    rloo_advantages,
    soft_overlong_penalty,
    value_loss,
)
from zerotir.algos.estimators import ESTIMATORS, AdvantageInputs

T = torch.tensor


def close(a, b, tol=1e-5):
    torch.testing.assert_close(
        torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol, rtol=0
    )


def test_grpo_group_normalisation():
    # group [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(1/3) = 0.57735 -> ±0.866025
    adv = grpo_advantages(T([1.0, 0.0, 0.0, 1.0]), group_size=4)
    close(adv, [0.866025, -0.866025, -0.866025, 0.866025], 1e-4)


def test_dr_grpo_has_no_std_division():
    # groups [1,0] and [1,1,]: centred only
    adv = grpo_advantages(T([1.0, 0.0, 1.0, 1.0]), group_size=2, norm_std=False)
    close(adv, [0.5, -0.5, 0.0, 0.0])


def test_grpo_all_same_group_gives_zero():
    close(grpo_advantages(T([1.0, 1.0, 1.0]), 3), [0.0, 0.0, 0.0])


def test_rloo_leave_one_out():
    # [1, 0, 0]: 1 - 0 = 1; 0 - (1+0)/2 = -0.5; same
    close(rloo_advantages(T([1.0, 0.0, 0.0]), 3), [1.0, -0.5, -0.5])


def test_group_size_must_divide():
    with pytest.raises(ValueError):
        grpo_advantages(T([1.0, 0.0, 1.0]), 2)


def test_gae_lambda_one_equals_return_minus_value():
    # one row, 3 action tokens, reward 1 at the end, gamma=lam=1: A_t = R - V_t
    mask = T([[1.0, 1.0, 1.0]])
    rewards = T([[0.0, 0.0, 1.0]])
    values = T([[0.2, 0.5, 0.9]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    close(adv, [[0.8, 0.5, 0.1]])
    close(ret, [[1.0, 1.0, 1.0]])


def test_gae_skips_environment_tokens():
    # tokens: a a E E a  (E injected). Values at E are garbage and must not matter.
    mask = T([[1.0, 1.0, 0.0, 0.0, 1.0]])
    rewards = T([[0.0, 0.0, 0.0, 0.0, 1.0]])
    values = T([[0.1, 0.3, 99.0, -99.0, 0.6]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # last action t=4: δ4 = 1 - 0.6 = 0.4; A4 = 0.4
    # t=1 (next action state is t=4): δ1 = 0 + 0.9*0.6 - 0.3 = 0.24; A1 = 0.24 + 0.45*0.4 = 0.42
    # t=0: δ0 = 0.9*0.3 - 0.1 = 0.17; A0 = 0.17 + 0.45*0.42 = 0.359
    close(adv, [[0.359, 0.42, 0.0, 0.0, 0.4]])
    close(ret, [[0.459, 0.72, 0.0, 0.0, 1.0]])


def test_discounted_returns_skip_env_tokens():
    mask = T([[1.0, 0.0, 1.0]])
    r = T([[0.0, 5.0, 2.0]])  # the 5.0 on an env token must be ignored
    close(discounted_returns(r, mask, gamma=0.5), [[1.0, 0.0, 2.0]])


def test_reinforce_pp_global_normalisation_with_kl():
    mask = T([[1.0, 1.0], [1.0, 0.0]])
    kl = T([[0.5, 0.5], [1.0, 0.0]])
    # token rewards: row0 [-0.05, 1-0.05] ; row1 [0 - 0.1] (reward 0)  (kl_coef 0.1)
    # returns (γ=1): row0 [0.9, 0.95]; row1 [-0.1]
    # mean = 1.75/3 = 0.583333; var = (0.100278 + 0.134444 + 0.466944)/3 = 0.2338889
    adv = reinforce_pp_advantages(T([1.0, 0.0]), mask, kl, kl_coef=0.1)
    std = math.sqrt(0.2338889)
    close(adv, [[0.316667 / std, 0.366667 / std], [-0.683333 / std, 0.0]], 1e-4)


def test_reinforce_pp_baseline_subtracts_group_mean_first():
    mask = torch.ones(4, 1)
    # groups [1, 0], [1, 1] -> centred [0.5, -0.5, 0, 0] -> whitened: mean 0, var 0.125
    adv = reinforce_pp_advantages(T([1.0, 0.0, 1.0, 1.0]), mask, baseline_group_size=2)
    s = math.sqrt(0.125)
    close(adv, [[0.5 / s], [-0.5 / s], [0.0], [0.0]], 1e-4)


def test_masked_whiten_ignores_masked():
    x = T([[1.0, 3.0, 100.0]])
    m = T([[1.0, 1.0, 0.0]])
    close(masked_whiten(x, m), [[-1.0, 1.0, 0.0]], 1e-4)


def test_aggregations():
    loss = T([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = T([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    close(aggregate(loss, m, "token-mean"), 10.0 / 4)  # (1+2+3+4)/4
    close(aggregate(loss, m, "seq-mean-token-mean"), 3.0)  # (2 + 4)/2
    close(aggregate(loss, m, "seq-mean-token-sum-norm", norm_len=5), 10.0 / (2 * 5))


def test_ppo_clip_asymmetric():
    # ratio = e^{lp-old}; pick log ratios giving r = 1.5 (A>0) and r = 0.5 (A<0)
    lp = T([[math.log(1.5), math.log(0.5)]])
    old = T([[0.0, 0.0]])
    adv = T([[1.0, -1.0]])
    m = T([[1.0, 1.0]])
    out = policy_loss(lp, old, adv, m, clip_low=0.2, clip_high=0.28, agg="token-mean")
    # token0: max(-1.5, -1.28) = -1.28 (clipped). token1: max(0.5, 0.8) = 0.8 (clipped)
    close(out.loss, (-1.28 + 0.8) / 2)
    close(out.metrics["clip_ratio"], 1.0)


def test_ppo_unclipped_and_dual_clip():
    lp = T([[math.log(1.1), math.log(5.0)]])
    old = torch.zeros(1, 2)
    adv = T([[2.0, -1.0]])
    m = torch.ones(1, 2)
    out = policy_loss(lp, old, adv, m, clip_low=0.2, clip_high=0.2, dual_clip=3.0)
    # token0 unclipped: -2*1.1 = -2.2; token1: max(5, 1.2)=5, dual clip caps at -A*c = 3
    close(out.loss, (-2.2 + 3.0) / 2)


def test_gspo_sequence_ratio():
    lp = T([[math.log(2.0), 0.0]])
    old = torch.zeros(1, 2)
    adv = T([[1.0, 1.0]])
    out = policy_loss(lp, old, adv, torch.ones(1, 2), clip_low=10, clip_high=10, ratio_level="sequence")
    # sequence log-ratio = mean(ln2, 0) -> r = sqrt(2) on every token
    close(out.loss, -math.sqrt(2.0))


def test_value_loss_clipped():
    v = T([[1.0]])
    old = T([[0.0]])
    ret = T([[0.5]])
    # unclipped (1-0.5)^2 = .25 ; clipped v=0.2 -> (0.2-0.5)^2 = .09; max = .25 -> 0.125
    close(value_loss(v, old, ret, torch.ones(1, 1), clip_eps=0.2).loss, 0.125)
    # where clipping is worse: v = -1, old 0, ret 1 -> unclipped 4, clipped (-0.2-1)^2 = 1.44 -> max 4 -> 2
    close(value_loss(T([[-1.0]]), old, T([[1.0]]), torch.ones(1, 1), 0.2).loss, 2.0)


def test_kl_estimators():
    lp, ref = T([0.0]), T([math.log(0.5)])
    d = math.log(2.0)
    close(kl_penalty(lp, ref, "k1"), [d])
    close(kl_penalty(lp, ref, "k2"), [0.5 * d * d])
    close(kl_penalty(lp, ref, "k3"), [0.5 - (-d) - 1.0])


def test_filters():
    correct = T([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=torch.bool)  # groups of 4: acc 1.0, 0.25, 0.0
    assert accuracy_band_keep(correct, 4, 0.2, 0.8).tolist() == [False, True, False]
    assert nonuniform_keep(correct.float(), 4).tolist() == [False, True, False]
    pen = soft_overlong_penalty(T([10, 15, 20]), max_len=20, cache=10)
    close(pen, [0.0, -0.5, -1.0])


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_env_tokens_get_no_advantage_and_no_gradient(name):
    """Every estimator + the loss: injected tokens (mask 0) receive exactly zero gradient."""
    torch.manual_seed(0)
    B, Tn = 4, 6
    mask = torch.ones(B, Tn)
    mask[:, 2:4] = 0.0  # an injected tool-output block in every row
    rewards = T([1.0, 0.0, 1.0, 0.0])
    values = torch.rand(B, Tn)
    adv, _ = ESTIMATORS[name](AdvantageInputs(rewards, mask, 2, values=values))
    assert torch.all(adv[mask == 0] == 0)
    logits = torch.randn(B, Tn, requires_grad=True)
    lp = torch.nn.functional.logsigmoid(logits)
    out = policy_loss(lp, lp.detach() - 0.05, adv, mask)
    out.loss.backward()
    assert torch.all(logits.grad[mask == 0] == 0)
    assert logits.grad[mask == 1].abs().sum() > 0
