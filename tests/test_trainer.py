"""The trainer end to end on tiny models: each algorithm learns a trivially learnable reward,
resume reproduces an uninterrupted run, checkpoints survive corruption and SIGTERM."""

import signal
import subprocess
import sys
import time

import pytest

from zerotir.config import build_config
from zerotir.logger import read_metrics
from zerotir.train import checkpoint as ckpt
from zerotir.train.trainer import Trainer, train


def first_char_lowercase(text: str, answer: str) -> float:
    """Learnable from scratch: ~10% of a random byte model's first tokens are lowercase letters."""
    return 1.0 if text[:1].islower() else 0.0


def tiny_cfg(model_dir, algo, steps, extra=()):
    ov = [
        f"model.path={model_dir}",
        f"algo.name={algo}",
        f"trainer.total_steps={steps}",
        "trainer.prompts_per_step=4",
        "algo.group_size=8",
        "rollout.max_response_len=3",
        "trainer.lr=3e-3",
        "trainer.eval_every=0",
        "trainer.save_every=0",
        "log.progress=false",
        "log.tensorboard=false",
        "data.train_size=64",
        "rollout.template=toy-zerorl",
        "rollout.max_tool_calls=0",
        "trainer.micro_batch_size=32",
        *extra,
    ]
    if algo == "ppo":
        ov += ["algo.critic_lr=3e-3", "algo.critic_steps=4"]
    if algo == "reinforce_pp":
        ov += ["algo.kl_coef=0.001", "algo.kl_in_reward=true"]
    return build_config("toy-zerotir", overrides=ov)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "ppo", "reinforce_pp", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_algorithm_raises_reward(tiny_model_dir, tmp_path, algo):
    cfg = tiny_cfg(
        tiny_model_dir, algo, 40, ["trainer.lr=1e-2"] + (["algo.critic_lr=1e-2"] if algo == "ppo" else [])
    )
    train(cfg, tmp_path / algo, reward_fn=first_char_lowercase)
    rows = read_metrics(tmp_path / algo)
    first = sum(r["reward/mean"] for r in rows[:5]) / 5
    last = sum(r["reward/mean"] for r in rows[-5:]) / 5
    assert last > first + 0.4, (algo, first, last)


NONTIME = lambda row: {k: v for k, v in row.items() if not k.startswith(("time/", "tokens/"))}  # noqa: E731


def test_resume_reproduces_uninterrupted_run(tiny_model_dir, tmp_path):
    full = tmp_path / "full"
    train(tiny_cfg(tiny_model_dir, "ppo", 4), full, reward_fn=first_char_lowercase)
    part = tmp_path / "part"
    train(tiny_cfg(tiny_model_dir, "ppo", 2), part, reward_fn=first_char_lowercase)  # "killed" after step 2
    cfg = tiny_cfg(tiny_model_dir, "ppo", 4)
    t = Trainer(cfg, part, resume=True, reward_fn=first_char_lowercase)
    assert t.step == 2
    t.fit()
    t.close()
    a, b = read_metrics(full), read_metrics(part)
    assert [r["step"] for r in b] == [0, 1, 2, 3]
    for ra, rb in zip(a[2:], b[2:]):
        assert NONTIME(ra) == pytest.approx(NONTIME(rb), abs=1e-6)


def test_corrupt_checkpoint_falls_back(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, "grpo", 4, ["trainer.save_every=2", "trainer.keep_checkpoints=3"])
    train(cfg, tmp_path, reward_fn=first_char_lowercase)
    cks = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert [c.name for c in cks] == ["step_0000002", "step_0000004"]
    with open(cks[-1] / "optimizer.pt", "r+b") as f:
        f.truncate(10)
    assert ckpt.latest_valid_checkpoint(tmp_path / "checkpoints") == cks[0]
    (cks[0] / ckpt.MANIFEST).unlink()  # a half-written one
    assert ckpt.latest_valid_checkpoint(tmp_path / "checkpoints") is None


def test_sigterm_saves_and_resume_continues(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "zerotir.cli",
        "train",
        "--preset",
        "toy-zerotir",
        "--run-dir",
        str(run),
        f"model.path={tiny_model_dir}",
        "trainer.total_steps=200",
        "trainer.prompts_per_step=2",
        "algo.group_size=2",
        "rollout.max_response_len=4",
        "trainer.eval_every=0",
        "trainer.save_every=0",
        "rollout.template=toy-zerorl",
        "rollout.max_tool_calls=0",
        "log.progress=false",
        "data.train_size=16",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 130, proc.stderr.read().decode()[-2000:]  # stopped by a signal, saved
    done = len(read_metrics(run))
    latest = ckpt.latest_valid_checkpoint(run / "checkpoints")
    assert latest is not None and int(latest.name.split("_")[1]) == done < 200
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "zerotir.cli",
            "train",
            "--resume",
            str(run),
            f"trainer.total_steps={done + 2}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert [row["step"] for row in read_metrics(run)] == list(range(done + 2))


def test_sandbox_failures_abort_the_step_with_a_clear_error(tiny_model_dir, tmp_path):
    from test_rollout import FlakySandbox, ScriptedEngine
    from zerotir.train.trainer import SandboxFailureAbort

    cfg = tiny_cfg(
        tiny_model_dir,
        "grpo",
        2,
        ["rollout.template=toy-zerotir", "rollout.max_tool_calls=2", "rollout.max_response_len=120"],
    )
    t = Trainer(cfg, tmp_path)
    try:
        t.engine = ScriptedEngine()
        t.sandbox = FlakySandbox(fail_times=10**6)
        with pytest.raises(SandboxFailureAbort, match="sandbox infrastructure failures"):
            t.train_step()
        t.sandbox = FlakySandbox(fail_times=0)  # healthy: the same step trains, code is counted
        m = t.train_step()
        assert m["rollout/code_ratio"] == 1.0 and m["rollout/sandbox_fail_ratio"] == 0.0
        assert m["reward/accuracy"] == 0.0  # the scripted answer 42 is wrong for toy problems
    finally:
        t.sandbox = None
        t.close()


def test_engine_sleeps_during_the_update_and_wakes_before_the_sync(tiny_model_dir, tmp_path):
    """An engine with `capabilities.sleep` (vLLM with `rollout.vllm_sleep`) gives its memory to the
    update: sleep, the learner's update, wake, then the weight sync (it reloads into woken memory)."""
    from zerotir.rollout.engine import EngineCapabilities

    events: list[str] = []

    class SleepingEngine:
        capabilities = EngineCapabilities(sleep=True)

        def __init__(self, inner):
            self.inner, self.tokenizer = inner, inner.tokenizer

        def generate(self, *a, **kw):
            events.append("generate")
            return self.inner.generate(*a, **kw)

        def load_weights(self, sd, version):
            events.append(f"sync v{version}")
            self.inner.load_weights(sd, version)

        def sleep(self, level=1):
            events.append("sleep")

        def wake_up(self):
            events.append("wake")

    t = Trainer(tiny_cfg(tiny_model_dir, "grpo", 2), tmp_path)
    try:
        t.engine = SleepingEngine(t.engine)
        train_on_batch = t.learner.train_on_batch
        t.learner.train_on_batch = lambda *a: (events.append("update"), train_on_batch(*a))[1]
        t.train_step()
        t.train_step()
    finally:
        t.close()
    runs = [e for i, e in enumerate(events) if e != "generate" or events[i - 1 : i] != ["generate"]]
    step = ["generate", "sleep", "update", "wake"]
    assert runs == [*step, "sync v1", *step, "sync v2"]
