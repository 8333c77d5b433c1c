"""GPU checks (run where a CUDA device exists; CI never runs this): the paths that CPU tests cannot
reach. Writes bench/results/gpu_smoke.json.

1. engine vs trainer logprobs on CUDA (fp32: 1e-4; bf16 weights: reported), through tool rollouts
   from the one-loop scheduler (pauses, resumes, injected outputs);
2. tool-rollout overhead on the GPU: interactive and round-based schedulers vs plain generation of the
   same model-token counts (the same method as bench/rollout.py);
3. three training steps of the toy preset on CUDA with bf16 autocast, and a resume from the saved
   checkpoint.

Everything (policy, engine, sandbox, tool-loop settings, sampling, prompts, trainer) is built through
`zerotir.build` from the toy ZeroTIR preset; trailing `key.sub=value` overrides change it.

    python bench/gpu_smoke.py [--isolation auto|none] [--smoke] [key.sub=value ...]
    python bench/gpu_smoke.py --device cpu --smoke   # dry-run of the script on a CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_config_args, bench_config, write_result  # noqa: E402
from rollout import InstantSandbox, code_prompts  # noqa: E402

from zerotir import build  # noqa: E402
from zerotir.config import RunConfig  # noqa: E402
from zerotir.rollout import run_tool_rollout  # noqa: E402
from zerotir.train.batch import collate, response_logits, token_logprobs  # noqa: E402
from zerotir.train.trainer import Trainer  # noqa: E402


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def smoke_config(args: argparse.Namespace, *fixed: str) -> RunConfig:
    """The toy ZeroTIR preset on `args.device`, then `fixed`, then the command line's overrides."""
    return bench_config("toy-zerotir", [f"trainer.device={args.device}", *fixed], args.overrides)


def check_logprobs(args, sandbox, dtype) -> dict:
    cfg = smoke_config(args, f"model.dtype={dtype}", "data.eval_size=32", "rollout.temperature=0.8", "rollout.top_p=0.9")
    dev = cfg.trainer.device
    model, tok = build.load_policy(cfg)
    ps, tmpl = code_prompts(cfg, tok)
    trajs = run_tool_rollout(
        build.make_engine(cfg, model, tok), sandbox, ps, tmpl, build.tool_loop_config(cfg), build.sampling_params(cfg, 0)
    )
    batch = collate(trajs, tok.pad_token_id)
    with torch.no_grad():
        logits = response_logits(model, batch, dev)
        lp = token_logprobs(logits, batch.response_ids.to(dev), temperature=cfg.rollout.temperature).float().cpu()
    m = batch.action_mask.bool()
    diff = (lp[m] - batch.old_logprobs[m]).abs()
    return {
        "dtype": dtype,
        "tokens": int(m.sum()),
        "injected_tokens": sum(t.action_mask.count(0) for t in trajs),
        "tool_calls": sum(len(t.tool_calls) for t in trajs),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
    }


def overhead(args, repeats=5, n=256) -> dict:
    run_cfg = smoke_config(args, "model.dtype=float32", f"data.eval_size={n}")
    dev = run_cfg.trainer.device
    model, tok = build.load_policy(run_cfg)
    eng = build.make_engine(run_cfg, model, tok)
    ps, tmpl = code_prompts(run_cfg, tok)
    cfg = build.tool_loop_config(run_cfg)
    out: dict = {}
    with torch.no_grad():
        run_tool_rollout(eng, InstantSandbox(), ps[:16], tmpl, cfg, build.sampling_params(run_cfg, 99))
        for name, arm_cfg in (("interactive", cfg), ("rounds", replace(cfg, scheduler="rounds"))):
            ratios = []
            for rep in range(repeats):
                _sync(dev)
                t0 = time.perf_counter()
                trajs = run_tool_rollout(eng, InstantSandbox(), ps, tmpl, arm_cfg, build.sampling_params(run_cfg, rep))
                _sync(dev)
                wall = time.perf_counter() - t0
                n_model = [sum(t.action_mask) for t in trajs]
                t0 = time.perf_counter()
                eng.generate(ps, build.sampling_params(run_cfg, rep, ignore_eos=True), [[]] * len(ps), n_model)
                _sync(dev)
                ratios.append(wall / (time.perf_counter() - t0))
            out[name] = {"ratios": ratios, "median": statistics.median(ratios)}
    out["prompts"] = n
    return out


def train_steps(args) -> dict:
    dev = args.device
    small = ["trainer.prompts_per_step=2", "algo.group_size=2"] if args.smoke else []
    with tempfile.TemporaryDirectory() as d:
        over = [f"trainer.bf16={str(dev.startswith('cuda')).lower()}", "trainer.save_every=2", "trainer.eval_every=0", *small]
        cfg = smoke_config(args, *over, "trainer.total_steps=3")
        t0 = time.perf_counter()
        m = Trainer(cfg, Path(d) / "run").fit()
        first = time.perf_counter() - t0
        resumed = Trainer(smoke_config(args, *over, "trainer.total_steps=4"), Path(d) / "run", resume=True)
        start_step = resumed.step
        m2 = resumed.fit()
        return {
            "seconds_3_steps": first,
            "final_metrics": {k: v for k, v in m.items() if isinstance(v, (int, float))},
            "resumed_from_step": start_step,
            "after_resume": {k: v for k, v in m2.items() if isinstance(v, (int, float))},
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--isolation", default="auto")
    ap.add_argument("--device", default="cuda", help="cpu only to dry-run this script")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--smoke", action="store_true", help="16 prompts, one repeat, small training steps")
    add_config_args(ap)
    args = ap.parse_args()
    if args.smoke:
        args.prompts = 16
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device")
    res: dict = {
        "gpu": torch.cuda.get_device_name(0) if dev.startswith("cuda") else "none",
        "torch": torch.__version__,
    }
    try:
        sandbox = build.make_sandbox(smoke_config(args, f"sandbox.isolation={args.isolation}"))
        res["sandbox_isolation"] = sandbox.isolation
    except Exception as e:  # noqa: BLE001
        res["sandbox_error"] = repr(e)
        sandbox = build.make_sandbox(smoke_config(args, "sandbox.isolation=none"))
        res["sandbox_isolation"] = "none"
    for name, fn in (
        ("logprobs_fp32", lambda: check_logprobs(args, sandbox, "float32")),
        ("logprobs_bf16", lambda: check_logprobs(args, sandbox, "bfloat16")),
        ("rollout_overhead", lambda: overhead(args, repeats=1 if args.smoke else 5, n=args.prompts)),
        ("train", lambda: train_steps(args)),
    ):
        t0 = time.perf_counter()
        try:
            res[name] = fn()
        except Exception:  # noqa: BLE001 - every check reports, none hides the others
            res[name] = {"error": traceback.format_exc()[-3000:]}
        res[name]["wall_s"] = time.perf_counter() - t0
        print(name, res[name], flush=True)
    sandbox.close()
    print("results:", write_result("gpu_smoke", res))


if __name__ == "__main__":
    main()
