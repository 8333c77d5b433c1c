"""The redesign's seams: one config tree reaching eval's sandbox calls, the two logprob fields and
their mismatch canary, documented config, a reward named by import path, layers that point down."""

import ast
import concurrent.futures as cf
import json
import sys
from pathlib import Path

import pytest

from test_rollout import ScriptedEngine
from zerotir.cli import build_parser, eval_config
from zerotir.config import build_config, undocumented_fields
from zerotir.rollout.protocol import TOO_LONG_NOTICE
from zerotir.types import ToolCall, Trajectory

SRC = Path(__file__).resolve().parent.parent / "src" / "zerotir"


def always_one(text: str, answer: str) -> float:
    return 1.0


class RecordingSandbox:
    """Answers every execution with a long stdout and records the timeout it was asked for."""

    def __init__(self):
        self.timeouts: list[float] = []

    def _result(self, code: str, timeout_s: float) -> ToolCall:
        self.timeouts.append(timeout_s)
        return ToolCall(code=code, stdout="0123456789 " * 2)  # 22 byte tokens

    def run_batch_sync(self, codes, timeout_s=10.0, sessions=None):
        return [self._result(c, timeout_s) for c in codes]

    def submit(self, code, timeout_s=10.0, session=None):
        f: cf.Future = cf.Future()
        f.set_result(self._result(code, timeout_s))
        return f

    def close(self):
        pass


@pytest.mark.integration
def test_eval_uses_the_presets_protocol(tmp_path):
    from zerotir.eval.benchmark import run_benchmarks

    conf = tmp_path / "proto.yaml"
    conf.write_text("rollout: {exec_timeout_s: 2.5, output_max_tokens: 7, max_tool_calls: 1}\n")
    args = build_parser().parse_args(
        ["eval", "--model", "toy", "--preset", "toy-zerotir", "--config", str(conf), "--benchmarks", "toy"]
    )
    cfg = eval_config(args)
    assert (cfg.rollout.template, cfg.rollout.max_response_len) == ("toy-zerotir", 160)  # the preset's
    sb = RecordingSandbox()
    res = run_benchmarks(cfg, ["toy"], tmp_path / "ev", limit=3, engine=ScriptedEngine(), sandbox=sb)
    assert sb.timeouts == [2.5, 2.5, 2.5]
    samples = [json.loads(x) for x in (tmp_path / "ev" / "samples_toy_calls1.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(TOO_LONG_NOTICE in s["text"] for s in samples)  # cap 7 < the output
    assert res["settings"]["exec_timeout_s"] == 2.5 and res["settings"]["output_max_tokens"] == 7
    # the same preset without the file: its own cap (64 tokens) shows the output, its own timeout (5 s)
    cfg = eval_config(build_parser().parse_args(["eval", "--model", "toy", "--preset", "toy-zerotir"]))
    sb = RecordingSandbox()
    run_benchmarks(cfg, ["toy"], tmp_path / "ev2", [1], limit=1, engine=ScriptedEngine(), sandbox=sb)
    assert sb.timeouts == [5.0]
    text = json.loads((tmp_path / "ev2" / "samples_toy_calls1.jsonl").read_text().splitlines()[0])["text"]
    assert TOO_LONG_NOTICE not in text and "0123456789" in text


@pytest.mark.unit
def test_eval_without_preset_keeps_its_defaults():
    cfg = eval_config(build_parser().parse_args(["eval", "--model", "toy", "--n", "3", "rollout.stateful=true"]))
    assert (cfg.rollout.template, cfg.rollout.max_response_len, cfg.rollout.max_tool_calls) == ("boxed-tir", 2048, 4)
    assert (cfg.eval.seed, cfg.eval.n_samples, cfg.rollout.exec_timeout_s, cfg.rollout.stateful) == (42, 3, 5.0, True)


@pytest.mark.unit
def test_sandbox_serve_takes_the_config_tree():
    from zerotir.cli import _SERVE_FLAGS, _config_with_flags

    a = build_parser().parse_args(["sandbox", "serve", "--preset", "toy-zerotir", "--slots", "3",
                                   "sandbox.server_max_sessions=7"])  # fmt: skip
    s = _config_with_flags(a, _SERVE_FLAGS).sandbox
    assert (s.slots, s.server_max_sessions, s.workers, s.server_max_queue) == (3, 7, 1, 1024)


@pytest.mark.unit
def test_sandbox_serve_reaches_the_pool_and_service_knobs(tmp_path, monkeypatch):
    """`zerotir sandbox serve --preset/--config/key=value` builds the app's PoolConfig and
    ServiceConfig from the config tree: the watchdog, timeout clamp and replay budget of the pool,
    the body, dispatch, queue-deadline and session caps of the service."""
    import uvicorn
    from fastapi.testclient import TestClient

    from zerotir.cli import main

    conf = tmp_path / "serve.yaml"
    conf.write_text("sandbox: {watchdog_grace_s: 4.5, max_timeout_s: 60, server_max_body_bytes: 2048}\n")
    served = {}
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: served.update(app=self.config.app, sockets=sockets)
    )
    over = ["sandbox.replay_timeout_s=2", "sandbox.watchdog_interval_s=0.25", "sandbox.server_dispatch_limit=3",
            "sandbox.server_queue_deadline_s=7", "sandbox.server_session_max_blocks=5",
            "sandbox.server_session_max_bytes=999", "sandbox.server_session_ttl_s=60"]  # fmt: skip
    assert main(["sandbox", "serve", "--preset", "toy-zerotir", "--config", str(conf), "--slots", "3", "--port", "0", *over]) == 0
    for sock in served["sockets"]:  # bound before the app was built (a port in use is one clear error)
        sock.close()
    pool, svc = served["app"].state.pool_config, served["app"].state.service_config
    assert (pool.watchdog_grace_s, pool.max_timeout_s, pool.replay_timeout_s, pool.watchdog_interval_s) == (
        4.5, 60.0, 2.0, 0.25)  # fmt: skip
    assert (pool.slots_per_worker, pool.workers) == (3, 1)  # the flag, the preset
    assert (svc.max_body_bytes, svc.dispatch_limit, svc.queue_deadline_s) == (2048, 3, 7.0)
    assert (svc.session_max_blocks, svc.session_max_bytes, svc.session_ttl_s) == (5, 999, 60.0)
    # the body cap acts (no pool is started: the limit answers before the request is parsed)
    assert TestClient(served["app"]).post("/run", json={"code": "#" * 4096}).status_code == 413


@pytest.mark.unit
def test_sandbox_section_defaults_are_the_components_defaults():
    """The config tree's defaults for the pool and service knobs are those of PoolConfig and
    ServiceConfig, so building through the config changes nothing for a default run."""
    from zerotir.build import POOL_FIELDS, SERVICE_FIELDS, pool_config, service_config
    from zerotir.sandbox.pool import PoolConfig
    from zerotir.sandbox.server import ServiceConfig

    cfg = build_config()
    built_pool, built_svc = pool_config(cfg), service_config(cfg)
    assert {k: getattr(built_pool, k) for k in (*POOL_FIELDS, "slots_per_worker")} == {
        k: getattr(PoolConfig(), k) for k in (*POOL_FIELDS, "slots_per_worker")
    }
    assert built_svc == ServiceConfig() and set(SERVICE_FIELDS) == {f for f in ServiceConfig.__dataclass_fields__}


@pytest.mark.unit
def test_every_config_field_is_documented():
    assert undocumented_fields() == []


@pytest.mark.unit
def test_reward_named_by_import_path():
    from zerotir.build import make_task
    from zerotir.toy.tokenizer import build_byte_tokenizer

    tok = build_byte_tokenizer()
    task = make_task(build_config("toy-zerotir", overrides=["rollout.reward=test_seams:always_one"]), tok)
    assert task.score(Trajectory(prompt_ids=[], text="nothing", answer="5")) == 1.0
    default = make_task(build_config("toy-zerotir"), tok)
    assert default.score(Trajectory(prompt_ids=[], text="nothing", answer="5")) == 0.0
    with pytest.raises(ValueError, match="cannot import"):
        make_task(build_config("toy-zerotir", overrides=["rollout.reward=test_seams:nope"]), tok)
    with pytest.raises(ValueError, match="module:function"):
        make_task(build_config("toy-zerotir", overrides=["rollout.reward=just_a_name"]), tok)


@pytest.mark.unit
def test_reward_module_in_the_current_directory(tmp_path, monkeypatch):
    """The installed `zerotir` command does not put the working directory on sys.path: a reward module
    next to the user's data was not found."""
    from zerotir.task import load_reward

    (tmp_path / "my_cwd_reward.py").write_text("def score(text, answer):\n    return 0.5\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    assert load_reward("my_cwd_reward:score")("x", "y") == 0.5
    with pytest.raises(ValueError, match="cannot import"):
        load_reward("no_such_module_here:score")


def test_logprob_fields_and_mismatch_canary(tiny_model_dir, tmp_path):
    """The HF engine shares the trainer's module: its logprobs serve the ratio and the canary reads ~0.
    An engine that declares no exact logprobs gets them recomputed (ratio ~1 at the first epoch) while
    its own stay in `rollout_logprobs`, so the canary sees the difference."""
    from test_rollout import FlakySandbox
    from test_trainer import tiny_cfg
    from zerotir.train.trainer import Trainer

    cfg = tiny_cfg(tiny_model_dir, "grpo", 1, ["rollout.temperature=0.7"])
    t = Trainer(cfg, tmp_path / "hf")
    try:
        m = t.train_step()
        assert m["train/mismatch_kl"] == pytest.approx(0.0, abs=1e-7)
        assert m["train/mismatch_max_abs"] < 1e-4
    finally:
        t.close()
    cfg = tiny_cfg(tiny_model_dir, "grpo", 1,
                   ["rollout.template=toy-zerotir", "rollout.max_tool_calls=2", "rollout.max_response_len=120"])  # fmt: skip
    t = Trainer(cfg, tmp_path / "scripted")
    try:
        t.engine, t.sandbox = ScriptedEngine(), FlakySandbox(fail_times=0)  # logprobs: -0.5 everywhere
        m = t.train_step()
        assert m["train/mismatch_max_abs"] > 0.5 and m["train/mismatch_kl"] > 0.01
        assert m["train/ratio_max"] == pytest.approx(1.0, abs=1e-4)
    finally:
        t.sandbox = None
        t.close()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.unit
@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("rollout", ("zerotir.train",)),
        ("eval", ("zerotir.train",)),
        ("toy", ("zerotir.train", "zerotir.data")),
        ("algos", ("zerotir.train", "zerotir.rollout", "zerotir.sandbox", "zerotir.eval", "zerotir.data")),
    ],
)
def test_layers_point_down(package, forbidden):
    for f in (SRC / package).rglob("*.py"):
        bad = {m for m in _imports(f) if m.startswith(forbidden)}
        assert not bad, (f.name, bad)


@pytest.mark.unit
def test_learner_knows_no_prompts_tools_or_engines():
    bad = {m for m in _imports(SRC / "train" / "learner.py")
           if m.startswith(("zerotir.rollout", "zerotir.sandbox", "zerotir.task", "zerotir.data", "zerotir.reward"))}  # fmt: skip
    assert not bad
    orchestrator = (SRC / "train" / "trainer.py").read_text()
    assert ".opt." not in orchestrator and "zero_grad" not in orchestrator and "backward" not in orchestrator


class AsyncScripted:
    """The scripted engine behind the `AsyncEngine` shape (one coroutine per segment)."""

    def __init__(self):
        from zerotir.rollout.engine import EngineCapabilities

        self.inner = ScriptedEngine(n_blocks=2)
        self.tokenizer = self.inner.tokenizer
        self.capabilities = EngineCapabilities()

    async def generate_one(self, prompt, params, stops, max_tokens):
        import asyncio

        await asyncio.sleep(0)
        return self.inner.generate([prompt], params, [stops], [max_tokens])[0]

    def load_weights(self, sd, version=0):
        pass


@pytest.mark.unit
def test_async_loop_records_what_the_sync_loop_records():
    import asyncio

    from zerotir.rollout import SamplingParams, ToolLoopConfig, get_template, run_tool_rollout
    from zerotir.rollout.async_loop import run_trajectories
    from zerotir.rollout.engine import AsyncEngine

    t = get_template("toy-zerotir")
    ps = [ScriptedEngine().tokenizer.encode(t.render(q), add_special_tokens=False) for q in ("1+1?", "2*3?")]
    cfg = ToolLoopConfig(max_tool_calls=2, max_response_len=400, output_max_tokens=7)
    eng = AsyncScripted()
    assert isinstance(eng, AsyncEngine)
    got = asyncio.run(run_trajectories(eng, RecordingSandbox(), ps, t, cfg, SamplingParams(seed=1)))
    want = run_tool_rollout(ScriptedEngine(n_blocks=2), RecordingSandbox(), ps, t, cfg, SamplingParams(seed=1))
    for a, b in zip(got, want):
        assert (a.response_ids, a.action_mask, a.rollout_logprobs) == (b.response_ids, b.action_mask, b.rollout_logprobs)
        assert a.finish_reason == b.finish_reason == "max_tool_calls" and len(a.tool_calls) == 2
        assert a.tool_calls[0].output == TOO_LONG_NOTICE
