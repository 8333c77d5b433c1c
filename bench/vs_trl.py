"""zerotir vs TRL's GRPOTrainer: seconds per training step and reward after a fixed number of steps.

Same tiny model (the shipped toy base model), same toy prompts (no-tool template), same group size
(8), prompts per step (8), learning rate, clip range (0.2/0.28), token-level loss, no KL, same
completion budget, both on this CPU, both measured in this run (each in its own process).
Results: bench/results/vs_trl.json.

Both sides read one run config (`vs_trl_config`, the toy ZeroRL preset with the settings above):
zerotir trains from it (everything built through `zerotir.build`); TRL's `GRPOTrainer` is the
baseline and so is built by hand, from the same config's model, template and rows (loaded through
`zerotir.build`) and the same verified math reward.

    pip install -e ".[bench]"; python bench/vs_trl.py [--steps 12] [--smoke] [key.sub=value ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import bench_config, write_result  # noqa: E402

STEPS_DEFAULT = 24
LR = 5e-5
MAX_LEN = 96
PROMPTS, GROUP = 8, 8


def vs_trl_config(steps: int, overrides: list[str]):
    """The toy ZeroRL run both sides train: group 8, 8 prompts, clip 0.2/0.28, token-level loss, no KL."""
    return bench_config(
        "toy-zerorl",
        [
            f"trainer.total_steps={steps}",
            f"trainer.prompts_per_step={PROMPTS}",
            f"algo.group_size={GROUP}",
            f"trainer.lr={LR}",
            f"rollout.max_response_len={MAX_LEN}",
            "trainer.eval_every=0",
            "trainer.save_every=0",
            "log.tensorboard=false",
            "log.progress=false",
            "algo.clip_low=0.2",
            "algo.clip_high=0.28",
            "algo.loss_agg=token-mean",
        ],
        overrides,
    )


def run_zerotir(steps: int, out: Path, overrides: list[str]) -> dict:
    import torch

    from zerotir.logger import read_metrics
    from zerotir.train.trainer import train

    torch.set_num_threads(2)
    train(vs_trl_config(steps, overrides), out)
    rows = read_metrics(out)
    return {"step_s": [r["time/step_s"] for r in rows], "reward": [r["reward/mean"] for r in rows]}


def run_trl(steps: int, out: Path, overrides: list[str]) -> dict:
    """The baseline, built by hand (it is TRL's trainer, not ours) from the same config's parts."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from zerotir import build
    from zerotir.reward import math_reward

    torch.set_num_threads(2)
    run_cfg = vs_trl_config(steps, overrides)
    model, tok = build.load_policy(run_cfg)
    tmpl = build.make_task(run_cfg, tok).template
    rows = build.load_rows(run_cfg, "train")
    ds = Dataset.from_list([{"prompt": tmpl.render(r["problem"]), "answer": r["answer"]} for r in rows])
    tok.padding_side = "left"

    def reward(completions, answer, **kw):
        return [math_reward(c, a) for c, a in zip(completions, answer)]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    cfg = GRPOConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=run_cfg.trainer.prompts_per_step * run_cfg.algo.group_size,
        num_generations=run_cfg.algo.group_size,
        max_completion_length=run_cfg.rollout.max_response_len,
        learning_rate=run_cfg.trainer.lr,
        epsilon=run_cfg.algo.clip_low,
        epsilon_high=run_cfg.algo.clip_high,
        loss_type="dapo",
        beta=0.0,
        temperature=run_cfg.rollout.temperature,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        weight_decay=0.0,
        seed=run_cfg.trainer.seed,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=cfg,
        train_dataset=ds,
        processing_class=tok,
        callbacks=[Timer()],
    )
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return {"step_s": times, "reward": rewards}


def summarise(r: dict) -> dict:
    steady = r["step_s"][1:] or r["step_s"]
    tail = r["reward"][-4:]
    return {
        "sec_per_step": sum(steady) / len(steady),
        "reward_last4": sum(tail) / len(tail),
        "reward_first": r["reward"][0] if r["reward"] else None,
        **r,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=STEPS_DEFAULT)
    ap.add_argument("--which", choices=["zerotir", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="2 steps each: only checks that both sides run")
    ap.add_argument("overrides", nargs="*", help="config overrides for both sides, key.sub=value")
    args = ap.parse_args()
    if args.smoke:
        args.steps = 2
    if args.which:  # child process
        out = Path(tempfile.mkdtemp(prefix=f"bench_{args.which}_"))
        res = (run_zerotir if args.which == "zerotir" else run_trl)(args.steps, out, args.overrides)
        Path(args.json_out).write_text(json.dumps(res))
        return
    results = {}
    for which in ("trl", "zerotir"):
        tmp = Path(tempfile.mkstemp(suffix=".json")[1])
        subprocess.run(
            [sys.executable, __file__, "--which", which, "--steps", str(args.steps), "--json-out", str(tmp), *args.overrides],
            check=True,
        )
        results[which] = summarise(json.loads(tmp.read_text()))
        print(
            f"{which}: {results[which]['sec_per_step']:.2f} s/step, reward (last 4 steps) "
            f"{results[which]['reward_last4']:.3f}",
            flush=True,
        )
    speedup = results["trl"]["sec_per_step"] / results["zerotir"]["sec_per_step"]
    path = write_result(
        "vs_trl",
        {
            "steps": args.steps,
            "prompts_per_step": PROMPTS,
            "group_size": GROUP,
            "lr": LR,
            "max_completion_length": MAX_LEN,
            "results": results,
            "speedup": speedup,
            "target_speedup": 1.25,
        },
    )
    print(f"zerotir is {speedup:.2f}x TRL's speed per step; results: {path}")


if __name__ == "__main__":
    main()
