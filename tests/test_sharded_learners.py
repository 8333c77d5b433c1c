"""FSDP2-sharded learners (zerotir.distributed.sharding): two gloo ranks make one learner's update.

The group runs as two Ray actors on a local instance with the shipped toy model, in fp32; one batch
of 7 synthetic trajectories (one without model tokens), micro-batches of 2, so each rank runs
several micro-batches of uneven composition.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from zerotir import build  # noqa: E402
from zerotir.config import build_config  # noqa: E402
from zerotir.distributed.sharding import combine_metrics, plan_shards  # noqa: E402
from zerotir.train.learner import Advantages  # noqa: E402
from zerotir.types import Trajectory  # noqa: E402

OV = [
    "trainer.micro_batch_size=2",
    "trainer.lr=1e-4",
    "trainer.threads=1",
    "trainer.ppo_epochs=2",
    "distributed.enabled=true",
    "distributed.learners=2",
    "distributed.learner_cpus=0",
    "distributed.rollout_cpus=0",
]


# ------------------------------------------------------------------ the split, without Ray
@pytest.mark.unit
@pytest.mark.parametrize(
    ("live", "world", "micro"),
    [
        ([1] * 7, 2, 2),
        ([1] * 6 + [0], 2, 2),
        ([1] * 5, 2, 1),
        ([1, 0, 0, 1, 1], 3, 1),
        ([1] * 16, 4, 3),
        ([1, 1], 2, 8),
    ],
)
def test_plan_gives_every_rank_the_same_micro_batch_count_each_with_model_tokens(live, world, micro):
    from zerotir.train.batch import micro_batches

    shards = plan_shards([bool(x) for x in live], world, micro)
    assert sorted(i for s in shards for i in s.rows) == list(range(len(live)))
    counts = set()
    for s in shards:
        chunks = micro_batches(len(s.rows), s.micro)
        counts.add(len(chunks))
        assert all(any(live[s.rows[j]] for j in c) for c in chunks)
    assert len(counts) == 1


@pytest.mark.unit
def test_plan_keeps_the_configured_micro_batch_size_when_the_batch_allows_it():
    assert [s.micro for s in plan_shards([True] * 7, 2, 2)] == [2, 2]
    assert [len(s.rows) for s in plan_shards([True] * 7, 2, 2)] == [4, 3]


@pytest.mark.unit
def test_plan_refuses_a_batch_with_fewer_live_rows_than_ranks():
    with pytest.raises(ValueError, match="distributed.learners=2"):
        plan_shards([True, False, False], 2, 2)


@pytest.mark.unit
def test_metrics_recombine_with_each_ranks_weight():
    a = {"train/policy_loss": 1.0, "train/ratio_max": 1.5, "train/grad_norm": 3.0, "train/mismatch_kl": 0.2,
         "shard/agg_weight": 0.25, "shard/token_weight": 0.5}  # fmt: skip
    b = {"train/policy_loss": 2.0, "train/ratio_max": 1.2, "train/grad_norm": 3.0, "train/mismatch_kl": 0.4,
         "shard/agg_weight": 0.75, "shard/token_weight": 0.5}  # fmt: skip
    out = combine_metrics([a, b])
    assert out == {"train/policy_loss": 1.75, "train/ratio_max": 1.5, "train/grad_norm": 3.0,
                   "train/mismatch_kl": pytest.approx(0.3)}  # fmt: skip


# ------------------------------------------------------------------ two gloo ranks on Ray
@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


def batch(tok, n: int = 7, seed: int = 0) -> list[Trajectory]:
    rng = random.Random(seed)
    ids = list(range(40, 100))
    out = []
    for k in range(n):
        T = rng.randint(3, 12)
        mask = [0] * T if k == 3 else [int(rng.random() > 0.2) for _ in range(T)]
        lps = [-rng.uniform(0.5, 4.0) if m else 0.0 for m in mask]
        out.append(Trajectory([rng.choice(ids) for _ in range(rng.randint(2, 6))], [rng.choice(ids) for _ in range(T)],
                              mask, lps))  # fmt: skip
    return out


def advantages(lb) -> Advantages:
    g = torch.Generator().manual_seed(1)
    return Advantages(torch.randn(lb.tokens.action_mask.shape, generator=g) * lb.tokens.action_mask)


@pytest.mark.ray
@pytest.mark.integration
def test_two_gloo_learners_make_the_update_of_one_and_checkpoint_it(local_ray, tmp_path: Path):
    from zerotir.distributed.actors import _seed_all
    from zerotir.distributed.driver import start_learners
    from zerotir.distributed.placement import Placement

    cfg = build_config("toy-zerotir", overrides=OV)
    torch.set_num_threads(1)
    _seed_all(cfg.trainer.seed)
    one, tok = build.build_learner(cfg, cfg.model.path)
    before = {k: v.clone() for k, v in one.state_dict().items()}
    trajs = batch(tok)
    lb = one.prepare(trajs, recompute=True)
    adv = advantages(lb)
    m1 = one.train_on_batch(lb, adv)
    after = one.state_dict()

    placement = Placement(cfg.distributed)
    group = start_learners(cfg, cfg.model.path, placement)
    lb2 = group.prepare(trajs, recompute=True)
    torch.testing.assert_close(
        lb2.tokens.recomputed_logprobs, lb.tokens.recomputed_logprobs, atol=1e-5, rtol=0
    )
    m2 = group.train_on_batch(lb, adv)
    full = ray.get(group.state_dict().ref)
    assert set(full) >= set(after)
    moved = max(float((after[k] - before[k]).abs().max()) for k in after)
    assert moved > 5e-5  # the update (Adam: about lr per step) is well above the tolerance
    for k in after:
        torch.testing.assert_close(full[k], after[k], atol=1e-5, rtol=0, msg=k)
    torch.testing.assert_close(group.last_train_logprobs, one.last_train_logprobs, atol=1e-5, rtol=0)
    assert set(m2) == set(m1)
    for k in m1:
        assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-5), k

    # checkpoint (full optimizer state and weights from rank 0), then a second step here and on a
    # group restored from the checkpoint: the same weights (Adam's moments came back)
    parts = group.checkpoint_parts()
    group.policy.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")  # a checkpoint holds the tokenizer too
    assert parts["learner_state"] == {"version": 1, "learners": 2}
    lb_next = group.prepare(batch(tok, seed=1), recompute=True)
    adv_next = advantages(lb_next)
    group.train_on_batch(lb_next, adv_next)
    continued = ray.get(group.state_dict().ref)
    for a in group.actors:
        ray.kill(a, no_restart=True)

    restored = start_learners(cfg, str(tmp_path / "policy"), placement)
    restored.load_checkpoint_parts(lambda name: parts[name])
    assert restored.version == 1
    restored.train_on_batch(lb_next, adv_next)
    again = ray.get(restored.state_dict().ref)
    for k in continued:
        torch.testing.assert_close(again[k], continued[k], atol=1e-6, rtol=0, msg=k)
    for a in restored.actors:
        ray.kill(a, no_restart=True)
    placement.remove()


@pytest.mark.unit
def test_config_refuses_sharding_a_critic_and_an_unknown_layout():
    from zerotir.config import ConfigError

    with pytest.raises((ValueError, ConfigError), match="critic"):
        build_config(
            "toy-zerotir", overrides=["algo.name=ppo", "algo.critic_lr=1e-5", "distributed.learners=2"]
        )
    with pytest.raises((ValueError, ConfigError), match="layout"):
        build_config("toy-zerotir", overrides=["distributed.layout=sideways"])
    assert build_config("toy-zerotir", overrides=["distributed.learners=2"]).distributed.learners == 2
