"""Screen settings of the demo's no-tool arm (ZeroRL) alone: base → final held-out accuracy per seed.

The tools arm takes minutes per seed; the no-tool arm about one. Issue 21 asks for a ZeroRL baseline
whose easy accuracy rises above its base beyond noise, so this runs only that arm, through the demo's
own `run_arm` (same base/final evaluation as `zerotir demo`), and prints per-seed numbers, the mean
training reward, and the 3-seed interval the demo's bench check uses (final easy − half-width > base).

python bench/zerorl_arm.py --name t07 --seeds 0 1 2 -- rollout.temperature=0.7   (`--` ends the seed list)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from rich.console import Console

from zerotir.analysis.intervals import mean_ci
from zerotir.config import build_config
from zerotir.demo import _eval_summary, run_arm
from zerotir.logger import read_metrics
from zerotir.train import steps
from zerotir.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, write_result  # noqa: E402


def _sampled(trainer: Trainer, n: int) -> dict:
    """Held-out avg@n at temperature 1 (the paper's Fig. 5/6 protocol), beside the demo's greedy eval:
    what RL at T=1 optimises, so a policy that sharpens shows it here even where greedy answers stay."""
    cfg = trainer.cfg.model_copy(
        update={"eval": trainer.cfg.eval.model_copy(update={"temperature": 1.0, "n_samples": n})}
    )
    m = steps.held_out_metrics(cfg, trainer.engine, trainer.sandbox, trainer.eval_rows, trainer.task,
                               trainer.tool)  # fmt: skip
    return _eval_summary(m)


def _screen(preset: str, run_dir: Path, overrides: list[str], sampled: int = 0) -> dict:
    """RL then the final greedy eval, as `run_arm` does them, without the base and mid-run evals;
    with `sampled` > 0 also avg@`sampled` at T=1 before and after RL."""
    cfg = build_config(preset, overrides=["trainer.eval_every=0", *overrides])
    t0 = time.time()
    trainer = Trainer(cfg, run_dir)
    out: dict = {"seed": cfg.trainer.seed}
    try:
        if sampled:
            out["base_sampled"] = _sampled(trainer, sampled)
        trainer.fit()
        final = _eval_summary(trainer.evaluate(desc=f"{preset} final eval"))
        if sampled:
            out["final_sampled"] = _sampled(trainer, sampled)
    finally:
        trainer.close()
    nan = dict.fromkeys(final, float("nan"))
    return {**out, "base": nan, "final": final, "seconds": round(time.time() - t0, 1)}


def _summarize(
    name: str, overrides: list[str], runs: list[dict], console: Console, base_easy: float | None = None
) -> None:
    """Means and 95% half-widths of the final accuracies over `runs`, and the issue's test: final easy
    minus its half-width above the base (measured by any run that evaluated the base; the base model and
    its greedy eval do not depend on the seed)."""
    out: dict = {"name": name, "overrides": overrides, "runs": runs}
    for key in ("accuracy_easy", "accuracy_hard", "accuracy"):
        out[key] = mean_ci([r["final"][key] for r in runs]).to_dict()
    if all("final_sampled" in r for r in runs):
        for key in ("accuracy_easy", "accuracy"):
            out[f"sampled_base_{key}"] = mean_ci([r["base_sampled"][key] for r in runs]).to_dict()
            out[f"sampled_final_{key}"] = mean_ci([r["final_sampled"][key] for r in runs]).to_dict()
    bases = [r["base"]["accuracy_easy"] for r in runs if not math.isnan(r["base"]["accuracy_easy"])]
    out["base_easy"] = bases[0] if bases else base_easy
    hw = out["accuracy_easy"]["ci95"]
    out["easy_rises_beyond_ci"] = (
        hw is not None
        and out["base_easy"] is not None
        and out["accuracy_easy"]["mean"] - hw > out["base_easy"]
    )
    path = write_result(f"zerorl_arm_{name}", out)
    console.print(json.dumps({k: v for k, v in out.items() if k != "runs"}))
    console.print(f"results: {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True, help="label of this setting (the result file's name)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--preset", default="toy-zerorl")
    ap.add_argument("--out", default="runs/zerorl-screen")
    ap.add_argument(
        "--screen",
        action="store_true",
        help="train and evaluate the final policy only (no base or mid-run eval: the base model and its "
        "greedy eval are the same for every setting, so a screen need not repeat them)",
    )
    ap.add_argument(
        "--sampled",
        type=int,
        default=0,
        metavar="N",
        help="with --screen: also held-out avg@N at temperature 1, before and after RL",
    )
    ap.add_argument("overrides", nargs="*", help="config overrides, key.sub=value")
    ap.add_argument(
        "--combine",
        nargs="+",
        metavar="NAME",
        help="pool the runs of earlier results (zerorl_arm_<NAME>.json, e.g. one seed each) under --name",
    )
    ap.add_argument(
        "--base-easy",
        type=float,
        help="the base model's easy accuracy when no pooled run measured it (--screen runs skip it)",
    )
    args = ap.parse_args()
    console = Console()
    if args.sampled and not args.screen:
        ap.error("--sampled needs --screen")
    if args.combine:
        done = [json.loads((RESULTS / f"zerorl_arm_{n}.json").read_text()) for n in args.combine]
        _summarize(
            args.name, done[0]["overrides"], [r for d in done for r in d["runs"]], console, args.base_easy
        )
        return
    runs = []
    for seed in args.seeds:
        run_dir = Path(args.out) / args.name / f"seed_{seed}"
        if run_dir.exists():
            raise SystemExit(f"{run_dir} exists: pick another --name or remove it")
        overrides = [*args.overrides, f"trainer.seed={seed}"]
        r = (
            _screen(args.preset, run_dir, overrides, args.sampled)
            if args.screen
            else run_arm(args.preset, run_dir, overrides, console)
        )
        rewards = [row["reward/accuracy"] for row in read_metrics(run_dir) if "reward/accuracy" in row]
        r["train_reward_mean"] = sum(rewards) / max(len(rewards), 1)
        r["train_reward_last10"] = sum(rewards[-10:]) / max(len(rewards[-10:]), 1)
        runs.append(r)
        b, f = r["base"], r["final"]
        console.print(
            f"{args.name} seed {seed}: easy {b['accuracy_easy']:.3f}->{f['accuracy_easy']:.3f} "
            f"hard {b['accuracy_hard']:.3f}->{f['accuracy_hard']:.3f} "
            f"all {b['accuracy']:.3f}->{f['accuracy']:.3f} train reward {r['train_reward_mean']:.3f} "
            f"(last 10 {r['train_reward_last10']:.3f}) {r['seconds']:.0f}s"
        )
        if "base_sampled" in r:
            bs, fs = r["base_sampled"], r["final_sampled"]
            console.print(
                f"  avg@{args.sampled} at T=1: easy {bs['accuracy_easy']:.3f}->{fs['accuracy_easy']:.3f} "
                f"all {bs['accuracy']:.3f}->{fs['accuracy']:.3f}"
            )
    _summarize(args.name, args.overrides, runs, console)


if __name__ == "__main__":
    main()
