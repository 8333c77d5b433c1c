"""What a real-model run needs (issue 22): PPO on a bf16 checkpoint, eval on a chosen device/dtype/
threads/batch through the config tree, one thread setup for every command, a loud all-filtered step,
and logprobs/entropy in LM-head chunks that equal the full computation."""

import json
import logging

import pytest
import torch

from conftest import run_cli
from zerotir import build
from zerotir.config import ConfigError, build_config
from zerotir.logger import read_metrics
from zerotir.train.batch import collate, response_logits, token_logprobs
from zerotir.train.trainer import Trainer, train
from zerotir.types import Trajectory


@pytest.fixture(scope="module")
def bf16_model_dir(tmp_path_factory):
    """A tiny Llama saved in bfloat16, as Qwen2.5 checkpoints ship."""
    from zerotir.toy.model import build_tiny_model
    from zerotir.toy.tokenizer import build_byte_tokenizer

    d = tmp_path_factory.mktemp("bf16_model")
    tok = build_byte_tokenizer()
    build_tiny_model(tok, seed=0, hidden=48, layers=2).to(torch.bfloat16).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def small_cfg(model_dir, extra=()):
    return build_config(
        "toy-zerotir",
        overrides=[
            f"model.path={model_dir}",
            "trainer.total_steps=1",
            "trainer.prompts_per_step=2",
            "algo.group_size=2",
            "rollout.max_response_len=4",
            "rollout.template=toy-zerorl",
            "rollout.max_tool_calls=0",
            "trainer.eval_every=0",
            "trainer.save_every=0",
            "log.progress=false",
            "log.tensorboard=false",
            "log.samples_per_step=0",
            "data.train_size=16",
            "trainer.threads=1",
            *extra,
        ],
    )


def varying_reward(text: str, answer: str) -> float:
    return 1.0 if text[:1].islower() else 0.0


# ------------------------------------------------------------------ 1. PPO on a bf16 checkpoint
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_ppo_update_on_a_bf16_checkpoint(bf16_model_dir, tmp_path, keep_threads, dtype):
    cfg = small_cfg(
        bf16_model_dir,
        [
            "algo.name=ppo",
            "algo.critic_lr=1e-3",
            "algo.critic_steps=1",
            f"model.dtype={dtype}",
            "algo.kl_coef=0.01",
        ],
    )
    trainer = Trainer(cfg, tmp_path, reward_fn=varying_reward)
    try:
        m = trainer.train_step()
        critic = trainer.learner.critic
        want = getattr(torch, dtype)
        assert {p.dtype for p in critic.parameters()} == {want}  # body and value head alike
        assert next(trainer.learner.policy.parameters()).dtype == want
        assert torch.isfinite(torch.tensor(m["train/value_loss"])) and "train/policy_loss" in m
        assert trainer.learner.version == 1
    finally:
        trainer.close()


def test_critic_load_errors_like_the_policy(tmp_path, tiny_model_dir):
    from zerotir.errors import ModelLoadError
    from zerotir.models import load_backbone

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="could not load a transformer body"):
        load_backbone(str(tmp_path))
    assert next(load_backbone(tiny_model_dir, "bfloat16").parameters()).dtype == torch.bfloat16


# ------------------------------------------------------------------ 2 + 3. eval and threads from config
def test_eval_takes_device_dtype_threads_and_batch_from_config(
    tiny_model_dir, tmp_path, monkeypatch, keep_threads
):
    from zerotir import cli

    seen = {}
    make_engine = build.make_engine

    def spy(cfg, policy, tok):
        seen["dtype"], seen["device"] = next(policy.parameters()).dtype, next(policy.parameters()).device
        seen["threads"] = torch.get_num_threads()
        return make_engine(cfg, policy, tok)

    monkeypatch.setattr(build, "make_engine", spy)
    torch.set_num_threads(2)
    out = tmp_path / "ev"
    rc = cli.main(
        ["eval", "--model", tiny_model_dir, "--benchmarks", "toy", "--limit", "3", "--max-tokens", "6",
         "--preset", "toy-zerotir", "--dtype", "bfloat16", "--threads", "1", "--batch-size", "2",
         "--device", "cpu", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    assert seen == {"dtype": torch.bfloat16, "device": torch.device("cpu"), "threads": 1}
    s = json.loads((out / "results.json").read_text())["settings"]
    assert (s["dtype"], s["device"], s["threads"], s["batch_size"]) == ("bfloat16", "cpu", 1, 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_eval_on_cuda_without_cuda_is_one_clear_line(tiny_model_dir, tmp_path):
    r = run_cli(
        "eval", "--model", tiny_model_dir, "--benchmarks", "toy", "--device", "cuda", "--out", tmp_path
    )
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [lines[-1]] and "trainer.device=cuda: CUDA is not available" in lines[-1]


def test_threads_default_and_override(keep_threads):
    torch.set_num_threads(1)
    assert (
        build.apply_runtime(build_config("toy-zerotir")) == build.default_threads() == torch.get_num_threads()
    )
    assert 1 <= build.default_threads() <= 4
    assert build.apply_runtime(build_config("toy-zerotir", overrides=["trainer.threads=3"])) == 3
    assert torch.get_num_threads() == 3
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            build.apply_runtime(build_config("toy-zerotir", overrides=["trainer.device=cuda"]))


def test_trainer_applies_the_default_threads(tiny_model_dir, tmp_path, keep_threads):
    torch.set_num_threads(7)
    Trainer(small_cfg(tiny_model_dir, ["trainer.threads=0"]), tmp_path).close()
    assert torch.get_num_threads() == build.default_threads() < 7


# ------------------------------------------------------------------ 4. a step whose filter keeps nothing
def test_all_filtered_steps_warn_count_and_summarise(tiny_model_dir, tmp_path, caplog, keep_threads):
    cfg = small_cfg(
        tiny_model_dir, ["trainer.total_steps=2", "algo.filter=accuracy_band", "algo.filter_low=0.5"]
    )
    with caplog.at_level(logging.WARNING, logger="zerotir.train"):
        trainer = train(cfg, tmp_path, reward_fn=lambda text, answer: 0.0)
    rows = read_metrics(tmp_path)
    assert [r["filter/empty_steps_in_a_row"] for r in rows] == [1, 2]
    assert not any("train/policy_loss" in r for r in rows)
    assert (trainer.counts.trained, trainer.step, trainer.learner.version) == (0, 2, 0)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("step 0: filter algo.filter=accuracy_band kept no group" in m for m in msgs)
    assert any("step 1:" in m and "2 step(s) in a row" in m for m in msgs)
    assert any("0 of 2 steps trained" in m for m in msgs)


def test_cli_train_summary_says_how_many_steps_trained(tiny_model_dir, tmp_path):
    r = run_cli(
        "train", "--preset", "toy-zerotir", "--run-dir", tmp_path / "r", f"model.path={tiny_model_dir}",
        "trainer.total_steps=1", "trainer.prompts_per_step=1", "algo.group_size=2", "rollout.max_response_len=3",
        "rollout.template=toy-zerorl", "rollout.max_tool_calls=0", "trainer.eval_every=0", "log.progress=false",
        "log.tensorboard=false", "data.train_size=8", "trainer.threads=1", "algo.filter=accuracy_band",
        "algo.filter_low=1.0", "algo.filter_high=1.0", timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "0/1 steps trained" in r.stdout
    assert "kept no group" in r.stderr


def test_distributed_driver_shares_the_empty_step_path():
    """The Ray driver's step is the single-process one (it adds metrics around `super().train_step`)."""
    pytest.importorskip("ray")
    from zerotir.distributed.driver import DistributedTrainer

    assert DistributedTrainer.fit is Trainer.fit
    assert "super().train_step()" in __import__("inspect").getsource(DistributedTrainer.train_step)


# ------------------------------------------------------------------ 6. chunked logprobs and entropy
def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    trajs = []
    for P, T in ((5, 37), (9, 20), (3, 1), (7, 33)):
        ids = torch.randint(3, vocab, (P + T,), generator=g).tolist()
        trajs.append(
            Trajectory(
                prompt_ids=ids[:P], response_ids=ids[P:], action_mask=[1] * T, rollout_logprobs=[0.0] * T
            )
        )
    return collate(trajs, pad_id=0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_entropy_and_grads_equal_the_full_computation(tiny_model_dir, temperature):
    from zerotir.algos.losses import entropy_from_logits
    from zerotir.models import load_causal_lm
    from zerotir.train.batch import response_stats

    torch.manual_seed(0)
    model = load_causal_lm(tiny_model_dir)
    batch = _batch(model.config.vocab_size)
    w = torch.randn(batch.action_mask.shape) * batch.action_mask

    def run(chunk):
        model.zero_grad(set_to_none=True)
        if chunk == "full":
            logits = response_logits(model, batch)
            lp, ent = token_logprobs(logits, batch.response_ids, temperature), entropy_from_logits(logits)
        else:
            lp, ent = response_stats(model, batch, temperature=temperature, chunk=chunk, entropy_grad=True)
        ((lp * w).sum() + (ent * w).sum()).backward()
        return lp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    lp0, ent0, g0 = run("full")
    for chunk in (0, 1, 8, 256):
        lp, ent, g = run(chunk)
        assert torch.allclose(lp, lp0, atol=1e-6, rtol=0), chunk
        assert torch.allclose(ent, ent0, atol=1e-6, rtol=0), chunk
        for n in g0:
            assert torch.allclose(g[n], g0[n], atol=1e-6, rtol=1e-5), (chunk, n)


def test_chunks_never_materialise_whole_sequence_logits(tiny_model_dir):
    from zerotir.models import load_causal_lm
    from zerotir.train.batch import response_stats

    model = load_causal_lm(tiny_model_dir)
    batch = _batch(model.config.vocab_size)
    widths = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: widths.append(o.shape[1]))
    try:
        lp, ent = response_stats(model, batch, chunk=8)
        lp.sum().backward()
    finally:
        hook.remove()
    assert widths and max(widths) <= 8  # the forward and the recomputation in backward alike
    assert lp.shape == ent.shape == batch.action_mask.shape and not ent.requires_grad


def test_learner_default_chunk_matches_full_path(tiny_model_dir, tmp_path, keep_threads):
    """One GRPO update with trainer.logprob_chunk=4 vs 0: the same metrics to fp32 rounding."""
    out = {}
    for chunk in (0, 4):
        cfg = small_cfg(tiny_model_dir, [f"trainer.logprob_chunk={chunk}", "trainer.seed=3"])
        trainer = Trainer(cfg, tmp_path / str(chunk), reward_fn=varying_reward)
        try:
            out[chunk] = trainer.train_step()
        finally:
            trainer.close()
    for k in ("train/policy_loss", "train/entropy", "train/grad_norm", "train/mismatch_max_abs"):
        assert out[4][k] == pytest.approx(out[0][k], abs=1e-5), k
