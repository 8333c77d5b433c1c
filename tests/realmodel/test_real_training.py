"""Training and evaluation on the real model: a GRPO update changes the policy, a run resumes from its
checkpoint with the updated weights, and `run_benchmarks` evaluates two tool budgets on MATH500.

Budgets are tiny (1 prompt x 2 samples x 16 tokens a step) so that the suite fits CI on 2 cores;
gradient checkpointing and micro-batching (1 sequence per micro-batch) are on, as on a GPU."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from safetensors import safe_open

from zerotir.config import build_config
from zerotir.rollout.hf_engine import HFEngine

pytestmark = [pytest.mark.realmodel, pytest.mark.integration]

PROBE = "model.layers.0.self_attn.q_proj.weight"


def tensor(model_dir: Path, name: str = PROBE):
    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as f:
        return f.get_tensor(name)


def train_cfg(model_dir, data: Path, steps: int):
    return build_config(
        "toy-zerotir",
        overrides=[
            f"model.path={model_dir}",
            "model.gradient_checkpointing=true",
            f"data.train={data}",
            "data.eval=null",
            "rollout.template=boxed-tir",
            "rollout.max_response_len=16",
            "rollout.max_tool_calls=1",
            "algo.group_size=2",
            "trainer.prompts_per_step=1",
            "trainer.micro_batch_size=1",
            "trainer.lr=1e-4",
            f"trainer.total_steps={steps}",
            "trainer.save_every=1",
            "trainer.eval_every=0",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )


def alternating():
    """Rewards 1, 0, 1, 0, ...: every group of 2 has a nonzero advantage, so every step updates."""
    it = itertools.cycle([1.0, 0.0])
    return lambda text, answer: next(it)


def test_grpo_update_changes_policy_and_resume_continues(smollm_dir, tmp_path):
    from zerotir.train import checkpoint as ckpt
    from zerotir.train.trainer import Trainer, train

    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"problem": "What is 6*7?", "answer": "42"}) + "\n")
    run = tmp_path / "run"
    train(train_cfg(smollm_dir, data, 1), run, reward_fn=alternating())
    (first,) = ckpt.list_checkpoints(run / "checkpoints")
    base, updated = tensor(smollm_dir), tensor(first / "policy")
    assert not updated.equal(base), "one GRPO update left the policy unchanged"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train/grad_norm"] > 0 and "rollout/context_limited_ratio" in rows[0]

    t = Trainer(train_cfg(smollm_dir, data, 2), run, resume=True, reward_fn=alternating())
    try:
        assert t.step == 1
        assert t.learner.policy.get_parameter(PROBE).detach().equal(updated)  # the checkpoint's weights
        t.fit()
    finally:
        t.close()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    assert not tensor(ckpt.latest_valid_checkpoint(run / "checkpoints") / "policy").equal(updated)


def test_eval_two_budgets(smollm, smollm_dir, tmp_path):
    from zerotir.eval.benchmark import run_benchmarks

    model, tok = smollm
    cfg = build_config(
        overrides=[
            f"model.path={smollm_dir}",
            "rollout.template=boxed-tir",
            "rollout.max_response_len=24",
            "eval.temperature=0",
            "eval.batch_size=2",
        ]
    )
    res = run_benchmarks(cfg, ["math500"], tmp_path, budgets=[0, 1], limit=2, engine=HFEngine(model, tok))
    by_budget = res["benchmarks"]["math500"]
    assert set(by_budget) == {"0", "1"}
    assert by_budget["0"]["tool_calls_mean"] == 0  # budget 0: nothing is executed
    for b in ("0", "1"):
        samples = [
            json.loads(x) for x in (tmp_path / f"samples_math500_calls{b}.jsonl").read_text().splitlines()
        ]
        assert len(samples) == 2
    assert (tmp_path / "results.json").exists()
