"""The commands a user meets (issue 23): no lost or silently mixed runs, input errors before any
work starts (one line, exit 2), progress that shows, exit codes that say what happened."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import free_port, run_cli
from zerotir import cli, console
from zerotir.errors import TrainingInterrupted, UsageError
from zerotir.rundir import discard_if_unused, fresh_default, prepare_new_run

ROOT = Path(__file__).resolve().parent.parent
SMALL_TRAIN = [
    "trainer.prompts_per_step=2",
    "algo.group_size=2",
    "trainer.eval_every=0",
    "data.eval_size=8",
    "log.tensorboard=false",
    "log.samples_per_step=0",
    "sandbox.slots=2",
]


@pytest.fixture(autouse=True)
def _restore_std_streams(monkeypatch):
    """cli.main() wraps sys.stdout/stderr (console.install): put pytest's back afterwards."""
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)


def _one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


# ------------------------------------------------------------------ 1. Ctrl-C through a closed pipe
@pytest.mark.slow
def test_sigint_with_closed_pipe_still_checkpoints_and_exits_130(tmp_path):
    """`zerotir train ... 2>&1 | tee log`, Ctrl-C: tee dies first, then the trainer gets SIGINT.
    The stop must still save a checkpoint (the toy presets save only at the end) and exit 130."""
    from zerotir.train.checkpoint import latest_valid_checkpoint

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zerotir.cli", "train", "--preset", "toy-zerotir", "--run-dir", str(run),
         "trainer.total_steps=500", *SMALL_TRAIN],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, signalled as a terminal's Ctrl-C would be
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        metrics = run / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no step finished in 600 s"
            time.sleep(0.5)
        proc.stdout.close()  # the reader (tee) is gone: every later write hits a closed pipe
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc == console.EXIT_SIGNAL == 130
    ck = latest_valid_checkpoint(run / "checkpoints")
    assert ck is not None and int(ck.name.split("_")[1]) >= 1
    assert int(ck.name.split("_")[1]) < 500


def test_safe_stream_survives_a_closed_pipe():
    r, w = os.pipe()
    target = os.fdopen(w, "w", buffering=1)
    s = console.SafeStream(target)
    s.write("seen\n")
    assert os.read(r, 100) == b"seen\n"
    os.close(r)
    for _ in range(3):  # EPIPE: dropped, not raised
        s.write("x" * 10_000 + "\n")
        s.flush()
    assert s.broken
    target.close()  # its buffer flushes into /dev/null now, quietly


def test_signal_notice_is_on_its_own_line(capsys):
    print("progress 3/10", end="", file=sys.stderr)  # a bar mid-line
    console.notice("zerotir: signal 2: finishing the current step")
    err = capsys.readouterr().err
    assert "progress 3/10\nzerotir: signal 2: finishing the current step\n" in err


# ------------------------------------------------------------------ 2. used run directories
def _used_run(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n')
    return path


def test_train_into_used_dir_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    import zerotir.build

    monkeypatch.setattr(zerotir.build, "build_learner", lambda *a, **k: pytest.fail("model loaded"))
    run = _used_run(tmp_path / "a")
    rc = cli.main(["train", "--preset", "toy-zerotir", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and _one_line(err), err
    assert "already holds a run" in err and f"--resume {run}" in err and "--overwrite" in err
    assert (run / "metrics.jsonl").read_text() == '{"step": 0}\n{"step": 1}\n'


def test_a_start_that_fails_before_writing_leaves_no_run_directory(tmp_path, capsys):
    """A missing model is found after the trainer took the run directory's lock: the directory held
    only `.lock`, and the corrected command was refused with "already holds a run"."""
    run = tmp_path / "a"
    args = ["train", "--preset", "toy-zerotir", "--run-dir", str(run)]
    for _ in range(2):
        assert cli.main([*args, f"model.path={tmp_path / 'no-model'}"]) == 2
        err = capsys.readouterr().err
        assert _one_line(err) and "no-model" in err and "already holds" not in err, err
        assert not run.exists()
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    discard_if_unused(run)  # a directory with anything else in it stays as it is
    assert (run / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("override,setting", [("rollout.engine=vllm", "rollout.engine=vllm"),
                                              ("distributed.enabled=true", "distributed.enabled=true")])  # fmt: skip
def test_a_setting_whose_package_is_missing_is_one_line(tmp_path, monkeypatch, capsys, override, setting):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in ("vllm", "ray") else real(n, *a))
    run = tmp_path / "a"
    assert cli.main(["train", "--preset", "toy-zerotir", "--run-dir", str(run), override]) == 2
    err = capsys.readouterr().err
    assert _one_line(err) and f"{setting} needs" in err and "pip install" in err, err
    assert not run.exists()


def test_overwrite_moves_the_old_run_aside(tmp_path, monkeypatch, capsys):
    import zerotir.train.trainer

    seen = []

    def fake_train(cfg, run_dir, resume):
        seen.append((run_dir, resume))
        return SimpleNamespace(step=0, counts=SimpleNamespace(trained=0))

    monkeypatch.setattr(zerotir.train.trainer, "train", fake_train)
    run = _used_run(tmp_path / "a")
    assert cli.main(["train", "--preset", "toy-zerotir", "--run-dir", str(run), "--overwrite"]) == 0
    assert seen == [(run, False)]
    old = [p for p in tmp_path.iterdir() if p.name.startswith("a.old-")]
    assert len(old) == 1 and (old[0] / "metrics.jsonl").read_text().count("\n") == 2
    assert not (run / "metrics.jsonl").exists()
    assert f"moved the previous run in {run} to {old[0]}" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(run), "--overwrite"]) == 2


def test_rundir_helpers(tmp_path):
    assert prepare_new_run(tmp_path / "new") is None  # absent: fine
    (tmp_path / "empty").mkdir()
    assert prepare_new_run(tmp_path / "empty") is None  # empty: fine
    used = _used_run(tmp_path / "used")
    with pytest.raises(UsageError, match="already holds a run"):
        prepare_new_run(used)
    assert fresh_default(tmp_path / "new") == tmp_path / "new"
    fresh = fresh_default(used)
    assert fresh != used and fresh.name.startswith("used-") and not fresh.exists()
    first = prepare_new_run(used, overwrite=True)
    _used_run(used)
    second = prepare_new_run(used, overwrite=True)  # twice in one second: two distinct names
    assert first != second and first.exists() and second.exists() and not used.exists()


def test_a_run_directory_another_process_writes_is_refused(tmp_path, monkeypatch, capsys):
    """`zerotir train --resume runs/e` while runs/e trained: both ran to the end, their metrics and
    samples interleaved and one overwrote the other's checkpoint (new-user review). The lock is
    the kernel's: a holder killed with -9 leaves nothing locked."""
    import zerotir.build
    from zerotir.rundir import lock_run_dir

    run = _used_run(tmp_path / "e")
    (run / "config.yaml").write_text("name: toy-zerotir\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time\nfrom zerotir.rundir import lock_run_dir\n"
         f"lock_run_dir({str(run)!r}); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setattr(zerotir.build, "build_learner", lambda *a, **k: pytest.fail("model loaded"))
        assert cli.main(["train", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"in use by pid {holder.pid}" in err and _one_line(err), err
        with pytest.raises(UsageError, match=f"in use by pid {holder.pid}"):
            prepare_new_run(run, overwrite=True)  # not moved aside under a live run either
        assert run.exists() and not any(p.name.startswith("e.old-") for p in tmp_path.iterdir())
    finally:
        holder.kill()
        holder.wait()
    lock_run_dir(run)  # free again once the holder is dead
    lock_run_dir(run)  # and re-entrant within this process


def test_an_output_place_that_cannot_be_written_is_one_line(monkeypatch, capsys):
    """A read-only or forbidden --run-dir / --out was an OSError traceback (new-user review)."""
    import zerotir.build

    monkeypatch.setattr(zerotir.build, "build_learner", lambda *a, **k: pytest.fail("model loaded"))
    assert cli.main(["train", "--preset", "toy-zerotir", "--run-dir", "/sys/zerotir-test/run"]) == 2
    err = capsys.readouterr().err
    assert "cannot write /sys/zerotir-test" in err and _one_line(err), err


def test_resume_refuses_a_preset_it_would_ignore(tmp_path, capsys):
    run = _used_run(tmp_path / "b")
    (run / "config.yaml").write_text("name: toy-zerotir\n")
    assert cli.main(["train", "--resume", str(run), "--preset", "toy-zerorl"]) == 2
    err = capsys.readouterr().err
    assert "would be ignored" in err and _one_line(err), err


def test_demo_into_used_out_is_refused(tmp_path, capsys):
    out = _used_run(tmp_path / "demo")
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "--resume" not in err


# ------------------------------------------------------------------ 3. eval: path-named benchmarks
class _FailingEngine:
    """The scripted engine until `fail_after` generate calls, then a crash (a dying GPU)."""

    def __init__(self, fail_after: int):
        from test_rollout import ScriptedEngine

        self.inner, self.left = ScriptedEngine(), fail_after
        self.tokenizer = self.inner.tokenizer

    def load_weights(self, sd, version=0):
        pass

    def generate(self, *a, **k):
        if self.left <= 0:
            raise RuntimeError("CUDA error: device lost")
        self.left -= 1
        return self.inner.generate(*a, **k)


@pytest.mark.integration
def test_eval_path_benchmark_names_outputs_and_writes_incrementally(tmp_path, capsys):
    from test_seams import RecordingSandbox
    from zerotir.eval.benchmark import run_benchmarks

    bench = tmp_path / "path" / "to" / "my.jsonl"
    bench.parent.mkdir(parents=True)
    bench.write_text(
        "".join(json.dumps({"problem": f"{i}*7", "answer": str(7 * i)}) + "\n" for i in range(3))
    )
    cfg = cli.eval_config(
        cli.build_parser().parse_args(["eval", "--model", "toy", "--preset", "toy-zerotir"])
    )
    from test_rollout import ScriptedEngine

    probe = ScriptedEngine()
    run_benchmarks(cfg, [str(bench)], tmp_path / "probe", [1], engine=probe, sandbox=RecordingSandbox())
    out = tmp_path / "ev"
    # the engine dies in the second budget, after all of the first one's generate calls
    with pytest.raises(RuntimeError, match="device lost"):
        engine = _FailingEngine(probe.calls)
        run_benchmarks(cfg, [str(bench)], out, [1, 2], engine=engine, sandbox=RecordingSandbox())
    res = json.loads((out / "results.json").read_text())
    assert (
        res["complete"] is False
        and list(res["benchmarks"]) == ["my"]
        and list(res["benchmarks"]["my"]) == ["1"]
    )
    assert res["settings"]["sources"] == {"my": str(bench)}
    assert len((out / "samples_my_calls1.jsonl").read_text().splitlines()) == 3
    assert "incomplete" in (out / "results.md").read_text()
    assert "my calls=1" in capsys.readouterr().err  # the progress bar
    res = run_benchmarks(cfg, [str(bench)], out, [1, 2], engine=ScriptedEngine(), sandbox=RecordingSandbox())
    assert res["complete"] and set(res["benchmarks"]["my"]) == {"1", "2"}
    assert (out / "samples_my_calls2.jsonl").exists()


def test_output_names_are_safe_and_distinct():
    from zerotir.eval.benchmark import output_names

    got = output_names(["math500", "a/my.jsonl", "b/my.jsonl", "weird dir/x y.parquet", "toy"])
    assert got == {"math500": "math500", "a/my.jsonl": "my", "b/my.jsonl": "my-2",
                   "weird dir/x y.parquet": "x_y", "toy": "toy"}  # fmt: skip


def test_results_md_code_ratio_is_the_fraction_with_code():
    from zerotir.eval.benchmark import results_markdown

    cell = {"accuracy": 0.5, "code_ratio": 0.25, "tool_calls_mean": 1.5}
    res = {
        "settings": {"model": "m", "template": "t", "n": 1, "temperature": 0, "top_p": 1, "max_tokens": 8,
                     "seed": 0, "grader": "g", "budgets": [4]},
        "benchmarks": {"a": {"4": cell}, "b": {"4": {**cell, "code_ratio": 0.75, "tool_calls_mean": 2.5}}},
    }  # fmt: skip
    lines = results_markdown(res).splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    row = [c.strip() for c in lines[4].strip("|").split("|")]
    cols = dict(zip(header, row))
    assert cols["code ratio"] == "0.500" and cols["calls/response"] == "2.00" and cols["avg"] == "50.0"


# ------------------------------------------------------------------ 4. analyze: two runs, one preset
def test_analyze_keeps_two_runs_of_the_same_preset(tmp_path):
    from test_analysis import write_run
    from zerotir.analysis.report import analyze

    write_run(tmp_path / "a", 20, name="toy-zerotir")
    write_run(tmp_path / "b", 30, name="toy-zerotir")
    rep = analyze([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    labels = list(rep["fits"])
    assert len(labels) == 2 and all(lab.startswith("toy-zerotir (") for lab in labels)
    assert str(tmp_path / "a") in labels[0] and str(tmp_path / "b") in labels[1]
    assert [rep["fits"][lab]["steps"] for lab in labels] == [20, 30]
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"## toy-zerotir ({tmp_path / 'a'})" in md and f"## toy-zerotir ({tmp_path / 'b'})" in md


# ------------------------------------------------------------------ 5. errors first, in one line
def test_eval_unknown_benchmark_fails_before_the_model_loads(monkeypatch, capsys, tmp_path):
    import zerotir.models

    monkeypatch.setattr(zerotir.models, "load_causal_lm", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(zerotir.models, "load_tokenizer", lambda *a, **k: pytest.fail("tokenizer loaded"))
    rc = cli.main(["eval", "--model", "toy", "--benchmarks", "math500,amc32", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and _one_line(err) and "'amc32'" in err and "did you mean 'amc23'" in err, err
    rc = cli.main(["eval", "--model", "toy", "--benchmarks", "toy", "--max-tool-calls", "1,x"])
    assert rc == 2 and "--max-tool-calls" in capsys.readouterr().err


def test_train_unknown_dataset_fails_before_the_model_loads(monkeypatch, capsys, tmp_path):
    import zerotir.build

    monkeypatch.setattr(zerotir.build, "build_learner", lambda *a, **k: pytest.fail("model loaded"))
    rc = cli.main(
        ["train", "--preset", "toy-zerotir", "--run-dir", str(tmp_path / "r"), "data.train=nope.jsonl"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and _one_line(err) and "'nope.jsonl'" in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "override,says",
    [
        ("rollout.template=nope", "rollout.template: unknown template 'nope'; choose one of"),
        ("rollout.reward=exact_reward", "expected `module:function`"),
        ("rollout.reward=nomod:f", "cannot import it"),
    ],
)
def test_unknown_template_or_reward_fails_before_the_model_loads(monkeypatch, capsys, tmp_path, override, says):
    """Both were tracebacks after the model had loaded, and --print-config printed the bad template
    (new-user review)."""
    import zerotir.build

    monkeypatch.setattr(zerotir.build, "build_learner", lambda *a, **k: pytest.fail("model loaded"))
    for argv in (
        ["train", "--preset", "toy-zerotir", "--run-dir", str(tmp_path / "r"), override],
        ["train", "--preset", "toy-zerotir", "--print-config", override],
        ["eval", "--preset", "toy-zerotir", "--model", "toy", "--benchmarks", "toy", "--out", str(tmp_path / "e"), override],
    ):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert says in err and _one_line(err), err
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  total_steps: 3\n  lr: [1e-4\nalgo: {name: ppo}\n")
    rc = cli.main(["train", "--preset", "toy-zerotir", "--config", str(bad), "--print-config"])
    err = capsys.readouterr().err
    assert rc == 2 and _one_line(err) and f"{bad}:4:" in err and "malformed YAML" in err, err
    rc = cli.main(["train", "--preset", "toy-zerotir", "--print-config", "trainer.lr=[1"])
    err = capsys.readouterr().err
    assert rc == 2 and _one_line(err) and "trainer.lr" in err, err


def test_an_error_naming_its_command_is_not_prefixed_twice(capsys):
    """`zerotir: error: zerotir train: ...` read the program name twice."""
    rc = cli.main(["train"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("zerotir train: error: give --preset") and err.count("zerotir") == 1, err


def test_bad_port_is_one_clear_error():
    r = run_cli("sandbox", "serve", "--port", "80801")
    assert r.returncode == 2 and "80801 is not a port" in r.stderr and "Traceback" not in r.stderr


def test_a_port_in_use_is_one_clear_error_and_no_ready_line():
    """uvicorn printed our "ready" line, then failed to bind and exited 3 (new-user review)."""
    import socket

    busy = socket.create_server(("127.0.0.1", 0))
    try:
        r = run_cli("sandbox", "serve", "--port", str(busy.getsockname()[1]))
    finally:
        busy.close()
    assert r.returncode == 2 and "cannot listen on 127.0.0.1:" in r.stderr, r.stderr
    assert "ready" not in r.stdout and "Traceback" not in r.stderr and _one_line(r.stderr)


# ------------------------------------------------------------------ 6. progress and startup lines
@pytest.mark.slow
def test_train_progress_draws_once_per_step(tmp_path):
    r = run_cli("train", "--preset", "toy-zerotir", "--run-dir", tmp_path / "r", "trainer.total_steps=3",
                *SMALL_TRAIN, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for k in (1, 2):
        assert r.stderr.count(f"| {k}/3 [") == 1, r.stderr  # one refresh per step, with its postfix


@pytest.mark.integration
def test_sandbox_serve_prints_address_and_isolation():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zerotir.cli", "sandbox", "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("ready" in ln for ln in lines) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = "".join(lines)
    assert f"starting on http://127.0.0.1:{port}" in text, text
    ready = next(ln for ln in lines if "ready" in ln)
    assert f"http://127.0.0.1:{port}" in ready and ("isolation: bwrap" in ready or "isolation: none" in ready)


def test_demo_table_is_not_truncated_on_a_narrow_terminal():
    from rich.console import Console

    from zerotir.demo import _print_table
    from zerotir.eval.runner import SUMMARY_KEYS

    stage = dict.fromkeys(SUMMARY_KEYS, 0.5)
    ci = dict.fromkeys(SUMMARY_KEYS, 0.031)  # a 3-seed summary: the widest cells
    summary = {
        arm: {"base": stage, "final": stage, "ci95": {"base": ci, "final": ci}, "phases": {"train_s": 9.0}}
        for arm in ("zerotir", "zerorl")
    } | {"seconds": 1.0, "n_seeds": 3}
    buf = io.StringIO()
    _print_table(Console(file=buf, width=60, force_terminal=False), summary)
    text = buf.getvalue()
    assert "…" not in text
    for col in ("accuracy", "easy", "hard", "code use", "calls/resp", "resp len", "zerotir", "zerorl"):
        assert col in text
    assert "50.0% ± 3.1" in text and "train 9" in text


# ------------------------------------------------------------------ 7. exit codes
def test_interrupted_train_exits_130_with_the_resume_command(tmp_path, monkeypatch, capsys):
    import zerotir.train.trainer

    def stopped(cfg, run_dir, resume):
        raise TrainingInterrupted(4, Path(run_dir) / "checkpoints" / "step_0000004")

    monkeypatch.setattr(zerotir.train.trainer, "train", stopped)
    run = tmp_path / "r"
    assert cli.main(["train", "--preset", "toy-zerotir", "--run-dir", str(run)]) == 130
    assert f"Continue with: zerotir train --resume {run}" in capsys.readouterr().err


def test_analyze_missing_dir_is_an_error(tmp_path, capsys):
    rc = cli.main(["analyze", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and _one_line(err) and "nope" in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ 8. toy pretrain, set-up stamp
TINY = {"steps": 6, "batch": 2, "seq_len": 32, "hidden": 48, "layers": 1, "warmup": 2}


def test_toy_pretrain_stops_on_signal_and_resumes_exactly(tmp_path, monkeypatch):
    import safetensors.torch

    import zerotir.toy.pretrain as pt

    full = pt.pretrain(tmp_path / "full", save_every=0, **TINY)
    real = pt.packed_batches

    def interrupting(*a, **k):  # Ctrl-C while the third batch is in use
        for i, b in enumerate(real(*a, **k)):
            if i == 2:
                os.kill(os.getpid(), signal.SIGINT)
            yield b

    monkeypatch.setattr(pt, "packed_batches", interrupting)
    with pytest.raises(TrainingInterrupted) as e:
        pt.pretrain(tmp_path / "cut", save_every=0, **TINY)
    assert (
        e.value.step == 3
        and "zerotir toy pretrain --out" in e.value.resume_cmd
        and "--resume" in e.value.resume_cmd
    )
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    monkeypatch.setattr(pt, "packed_batches", real)
    with pytest.raises(UsageError, match=r"other settings: steps 6 \(now 7\); resume with the command"):
        pt.pretrain(tmp_path / "cut", resume=True, save_every=0, **{**TINY, "steps": 7})
    resumed = pt.pretrain(tmp_path / "cut", resume=True, save_every=0, **TINY)
    assert resumed["final_loss"] == pytest.approx(full["final_loss"], rel=1e-6)
    a = safetensors.torch.load_file(tmp_path / "full" / "model.safetensors")
    b = safetensors.torch.load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
    assert not (tmp_path / "cut" / "checkpoints").exists()  # done: the weights are the result
    # --resume of a finished directory started a fresh default recipe over its model (new-user review)
    with pytest.raises(UsageError, match="holds a finished model and no checkpoint"):
        pt.pretrain(tmp_path / "cut", resume=True, save_every=0, **TINY)
    assert safetensors.torch.load_file(tmp_path / "cut" / "model.safetensors").keys() == b.keys()


def test_toy_pretrain_second_stage_continues_from_a_saved_model(tmp_path):
    """`--init` starts from the saved weights (not a random model) on another mix, and the recipe
    records both stages; a model of another vocabulary or an unknown mix is a usage error."""
    import safetensors.torch
    import torch

    import zerotir.toy.pretrain as pt

    first = pt.pretrain(tmp_path / "one", save_every=0, **TINY)
    zero = pt.pretrain(tmp_path / "two", save_every=0, init=str(tmp_path / "one"), mix="copy", **{**TINY, "steps": 0})
    a = safetensors.torch.load_file(tmp_path / "one" / "model.safetensors")
    b = safetensors.torch.load_file(tmp_path / "two" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # zero steps of stage two: exactly stage one
    two = pt.pretrain(tmp_path / "three", save_every=0, init=str(tmp_path / "one"), mix="copy", **TINY)
    assert two["init"] == str(tmp_path / "one") and two["mix"] == "copy" and two["init_recipe"]["steps"] == 6
    assert zero["init_recipe"] == json.loads((tmp_path / "one" / "pretrain.json").read_text()) == first
    with pytest.raises(UsageError, match="unknown corpus mix"):
        pt.pretrain(tmp_path / "four", save_every=0, mix="nope", **TINY)
    from zerotir.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="no config.json"):
        pt.pretrain(tmp_path / "five", save_every=0, init=str(tmp_path / "missing"), **TINY)


def test_toy_pretrain_into_used_out_is_refused(tmp_path, capsys):
    out = _used_run(tmp_path / "base")
    assert cli.main(["toy", "pretrain", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_make_setup_reinstalls_torch_when_the_choice_changes(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")

    def plan(*extra: str) -> str:
        r = subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={venv}", "setup", *extra],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    first = plan()
    assert "pip install -q  torch==2.13.0" in first and "--force-reinstall" not in first
    for line in first.splitlines():  # do what `make setup` would, without installing anything
        if line.startswith("touch "):
            Path(line.split()[1]).touch()
    assert "pip install" not in plan()  # nothing changed: nothing to do
    gpu = plan("TORCH_INDEX=https://download.pytorch.org/whl/cu128")
    assert "--force-reinstall torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" in gpu
    assert 'install -q -e ".[dev,docs,ray,realmodel]"' in gpu


# ------------------------------------------------------------------ 9. dev extras cover the tests
def test_dev_extra_has_what_the_data_tests_import():
    import tomllib

    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in dev}
    assert {"datasets", "pyarrow"} <= names
