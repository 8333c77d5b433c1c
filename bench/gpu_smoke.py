"""GPU checks (run where a CUDA device exists; CI never runs this): the paths that CPU tests cannot
reach. Writes bench/results/gpu_smoke.json.

1. engine vs trainer logprobs on CUDA (fp32: 1e-4; bf16 weights: reported), through tool rollouts
   from the one-loop scheduler (pauses, resumes, injected outputs);
2. tool-rollout overhead on the GPU: interactive and round-based schedulers vs plain generation of the
   same model-token counts (the same method as bench/rollout.py);
3. three training steps of the toy preset on CUDA with bf16 autocast, and a resume from the saved
   checkpoint.

    python bench/gpu_smoke.py [--isolation auto|none]
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
from _common import write_result  # noqa: E402
from rollout import InstantSandbox  # noqa: E402

from zerotir.config import build_config  # noqa: E402
from zerotir.data import load_dataset_rows  # noqa: E402
from zerotir.models import load_causal_lm, load_tokenizer  # noqa: E402
from zerotir.rollout import SamplingParams, ToolLoopConfig, get_template, run_tool_rollout  # noqa: E402
from zerotir.rollout.hf_engine import HFEngine  # noqa: E402
from zerotir.sandbox.base import LocalSandbox  # noqa: E402
from zerotir.sandbox.pool import PoolConfig  # noqa: E402
from zerotir.train.batch import collate, response_logits, token_logprobs  # noqa: E402
from zerotir.train.trainer import Trainer  # noqa: E402


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def toy_prompts(tok, n):
    tmpl = get_template("toy-zerotir")
    rows = load_dataset_rows("toy", toy_size=n, toy_split="test")
    ps = [
        tok.encode(
            tmpl.render(r["problem"]) + f" We compute {r['expression']} with Python.\n",
            add_special_tokens=False,
        )
        for r in rows
    ]
    return ps, tmpl


def check_logprobs(dev, sandbox, dtype) -> dict:
    tok = load_tokenizer("toy")
    model = load_causal_lm("toy", dtype, dev)
    ps, tmpl = toy_prompts(tok, 32)
    trajs = run_tool_rollout(
        HFEngine(model, tok, device=dev),
        sandbox,
        ps,
        tmpl,
        ToolLoopConfig(max_tool_calls=2, max_response_len=160),
        SamplingParams(0.8, 0.9, 160, seed=0),
    )
    batch = collate(trajs, tok.pad_token_id)
    with torch.no_grad():
        lp = (
            token_logprobs(response_logits(model, batch, dev), batch.response_ids.to(dev), temperature=0.8)
            .float()
            .cpu()
        )
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


def overhead(dev, repeats=5, n=256) -> dict:
    tok = load_tokenizer("toy")
    eng = HFEngine(load_causal_lm("toy", "float32", dev), tok, device=dev)
    ps, tmpl = toy_prompts(tok, n)
    cfg = ToolLoopConfig(max_tool_calls=2, max_response_len=160)
    out: dict = {}
    with torch.no_grad():
        run_tool_rollout(eng, InstantSandbox(), ps[:16], tmpl, cfg, SamplingParams(1.0, 1.0, 160, seed=99))
        for name, arm_cfg in (("interactive", cfg), ("rounds", replace(cfg, scheduler="rounds"))):
            ratios = []
            for rep in range(repeats):
                _sync(dev)
                t0 = time.perf_counter()
                trajs = run_tool_rollout(
                    eng, InstantSandbox(), ps, tmpl, arm_cfg, SamplingParams(1.0, 1.0, 160, seed=rep)
                )
                _sync(dev)
                wall = time.perf_counter() - t0
                n_model = [sum(t.action_mask) for t in trajs]
                t0 = time.perf_counter()
                eng.generate(
                    ps, SamplingParams(1.0, 1.0, 160, seed=rep, ignore_eos=True), [[]] * len(ps), n_model
                )
                _sync(dev)
                ratios.append(wall / (time.perf_counter() - t0))
            out[name] = {"ratios": ratios, "median": statistics.median(ratios)}
    out["prompts"] = n
    return out


def train_steps(dev) -> dict:
    with tempfile.TemporaryDirectory() as d:
        over = [
            f"trainer.device={dev}",
            f"trainer.bf16={str(dev.startswith('cuda')).lower()}",
            "trainer.total_steps=3",
            "trainer.save_every=2",
            "trainer.eval_every=0",
        ]
        cfg = build_config("toy-zerotir", overrides=over)
        t0 = time.perf_counter()
        m = Trainer(cfg, Path(d) / "run").fit()
        first = time.perf_counter() - t0
        cfg2 = build_config(
            "toy-zerotir",
            overrides=[*over[:2], "trainer.total_steps=4", "trainer.save_every=2", "trainer.eval_every=0"],
        )
        resumed = Trainer(cfg2, Path(d) / "run", resume=True)
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
    args = ap.parse_args()
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device")
    res: dict = {
        "gpu": torch.cuda.get_device_name(0) if dev.startswith("cuda") else "none",
        "torch": torch.__version__,
    }
    try:
        sandbox = LocalSandbox(PoolConfig(isolation=args.isolation))
        res["sandbox_isolation"] = sandbox.isolation
    except Exception as e:  # noqa: BLE001
        res["sandbox_error"] = repr(e)
        sandbox = LocalSandbox(PoolConfig(isolation="none"))
        res["sandbox_isolation"] = "none"
    for name, fn in (
        ("logprobs_fp32", lambda: check_logprobs(dev, sandbox, "float32")),
        ("logprobs_bf16", lambda: check_logprobs(dev, sandbox, "bfloat16")),
        ("rollout_overhead", lambda: overhead(dev, n=args.prompts)),
        ("train", lambda: train_steps(dev)),
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
