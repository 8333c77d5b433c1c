"""Synchronous vs asynchronous Ray pipeline on the toy world, with tool calls that take real time.

    python bench/async_pipeline.py [--steps 4] [--seeds 0 1] [--smoke] [key.sub=value ...]

Every run trains the toy ZeroTIR preset on a local Ray instance; a share of the executions sleeps
50-200 ms inside the sandbox (`slow_sandbox`, applied to each worker's sandbox through
`distributed.sandbox_wrapper`), so the long tail of tool latency matters as it does with real code.
Reported per layout: wall time per step (step 0, the warm-up, excluded), reward/accuracy at the
last step and averaged over steps, per seed and as mean ± spread; the speed-up of each async layout
over sync with the same number of workers. Writes bench/results/async_pipeline.json with the
machine's details. Times on a shared machine are what they are: the JSON says how loaded it was.
Each run is `zerotir.distributed.train` on a config from `_common.bench_config` (so everything is
built through `zerotir.build`, on the driver and in the actors); trailing overrides apply to all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, add_config_args, bench_config  # noqa: E402

SLOW_SHARE = 0.5
"""Share of executions that sleep; the delay is 50-200 ms, drawn from a hash of the code."""


def _delay(code: str) -> float:
    h = int(hashlib.sha256(code.encode()).hexdigest()[:8], 16)
    return 0.05 + 0.15 * ((h >> 8) % 1000) / 999 if (h % 1000) / 1000 < SLOW_SHARE else 0.0


def _slowed(code: str) -> str:
    d = _delay(code)
    return f"__import__('time').sleep({d:.3f})\n{code}" if d else code


class _SlowSandbox:
    """A sandbox whose executions first sleep for `_delay(code)` inside the sandbox (the output of
    the code itself is unchanged)."""

    def __init__(self, inner):
        self.inner = inner

    def submit(self, code, timeout_s=10.0, session=None):
        return self.inner.submit(_slowed(code), timeout_s, session)

    def run_batch_sync(self, codes, timeout_s=10.0, sessions=None):
        return self.inner.run_batch_sync([_slowed(c) for c in codes], timeout_s, sessions)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def slow_sandbox(sandbox):
    """`distributed.sandbox_wrapper=async_pipeline:slow_sandbox`."""
    return _SlowSandbox(sandbox)


LAYOUTS = {
    "sync_2w": ["distributed.rollout_workers=2"],
    "async_s1_2w": ["distributed.rollout_workers=2", "distributed.max_staleness=1", "distributed.off_policy=tis"],
    "async_s2_2w": ["distributed.rollout_workers=2", "distributed.max_staleness=2", "distributed.off_policy=tis"],
    "async_s1_2w_partial": [
        "distributed.rollout_workers=2", "distributed.max_staleness=1", "distributed.off_policy=tis",
        "distributed.partial_rollouts=true", "distributed.chunk_tokens=32",
    ],
    "sync_1w": ["distributed.rollout_workers=1"],
    "async_s1_1w": ["distributed.rollout_workers=1", "distributed.max_staleness=1", "distributed.off_policy=tis"],
}  # fmt: skip
ONE_SEED = {"async_s1_2w_partial", "sync_1w", "async_s1_1w"}
"""Layouts run with the first seed only (time on a shared machine)."""


def run_layout(name: str, seed: int, steps: int, base: list[str], overrides: list[str]) -> dict:
    from zerotir.distributed import train
    from zerotir.logger import read_metrics

    ov = [*base, *LAYOUTS[name], f"trainer.seed={seed}", f"trainer.total_steps={steps}"]
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train(bench_config("toy-zerotir", ov, overrides), d)
        wall = time.perf_counter() - t0
        rows = read_metrics(d)
    step_s = [r["time/step_s"] for r in rows[1:]]
    keys = ("time/rollout_idle_s", "time/learner_idle_s", "time/sandbox_s", "async/staleness_max",
            "async/partial_share", "is/weight_mean", "train/mismatch_kl")  # fmt: skip
    return {
        "layout": name,
        "seed": seed,
        "step_s_mean": statistics.mean(step_s) if step_s else None,
        "step_s": [r["time/step_s"] for r in rows],
        "accuracy_last": rows[-1]["reward/accuracy"],
        "accuracy_mean": statistics.mean(r["reward/accuracy"] for r in rows),
        "code_ratio_mean": statistics.mean(r["rollout/code_ratio"] for r in rows),
        "run_wall_s": wall,
        **{f"mean:{k}": statistics.mean(r.get(k, 0.0) for r in rows) for k in keys},
    }


def summarise(runs: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for name in LAYOUTS:
        rs = [r for r in runs if r["layout"] == name]
        if not rs:
            continue
        st = [r["step_s_mean"] for r in rs]
        acc = [r["accuracy_last"] for r in rs]
        out[name] = {
            "seeds": [r["seed"] for r in rs],
            "step_s": statistics.mean(st),
            "step_s_spread": (max(st) - min(st)) / 2,
            "accuracy_last": statistics.mean(acc),
            "accuracy_last_spread": (max(acc) - min(acc)) / 2,
            "accuracy_mean": statistics.mean(r["accuracy_mean"] for r in rs),
        }
    for name, s in out.items():
        ref = "sync_1w" if name.endswith("1w") else "sync_2w"
        if ref in out:
            s["speedup_vs_" + ref] = out[ref]["step_s"] / s["step_s"]
    if "sync_1w" in out and "sync_2w" in out:
        out["scaling_sync_1w_to_2w"] = {"speedup": out["sync_1w"]["step_s"] / out["sync_2w"]["step_s"]}
    if "async_s1_1w" in out and "async_s1_2w" in out:
        out["scaling_async_s1_1w_to_2w"] = {
            "speedup": out["async_s1_1w"]["step_s"] / out["async_s1_2w"]["step_s"]
        }
    return out


def machine() -> dict:
    import ray
    import torch

    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_avg_1_5_15": os.getloadavg(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "note": "shared machine: other jobs were running; times are as measured",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS))
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--out", default=str(RESULTS / "async_pipeline.json"))
    ap.add_argument("--smoke", action="store_true", help="2 steps, one seed, the 1-worker layouts, tiny batches")
    add_config_args(ap)
    a = ap.parse_args()
    if a.smoke:
        a.steps, a.seeds, a.layouts, a.prompts, a.group, a.max_len = 2, [0], ["sync_1w", "async_s1_1w"], 2, 2, 32
    # the workers import this module for the sandbox wrapper
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    base = [
        f"trainer.prompts_per_step={a.prompts}", f"algo.group_size={a.group}", f"rollout.max_response_len={a.max_len}",
        "trainer.eval_every=0", "trainer.save_every=0", "log.progress=false", "log.tensorboard=false",
        "trainer.threads=1", "distributed.enabled=true", "distributed.rollout_cpus=0", "distributed.learner_cpus=0",
        "distributed.sandbox_wrapper=async_pipeline:slow_sandbox",
    ]  # fmt: skip
    runs = []
    t0 = time.time()
    for name in a.layouts:
        for seed in a.seeds[:1] if name in ONE_SEED else a.seeds:
            r = run_layout(name, seed, a.steps, base, a.overrides)
            print(
                json.dumps({k: r[k] for k in ("layout", "seed", "step_s_mean", "accuracy_last")}), flush=True
            )
            runs.append(r)
    ray.shutdown()
    res = {
        "machine": machine(),
        "settings": {
            **vars(a),
            "slow_share": SLOW_SHARE,
            "delay_s": [0.05, 0.2],
            "bench_wall_s": time.time() - t0,
        },
        "summary": summarise(runs),
        "runs": runs,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
