"""Peak resident memory of one PPO update (critic on) on a real checkpoint, full vs chunked logits.

    python bench/memory_step.py [--model /work/models/smollm2-135m] [--response 512] [--micro 4]

Each configuration runs in a fresh process (peak RSS only grows within one), builds the learner
through `zerotir.build` exactly as training does, and runs one step on synthetic trajectories
(4 sequences of 64 prompt + `--response` sampled tokens): critic values, advantages (GAE), one
policy update and `--critic-steps` critic updates. `ru_maxrss` before the step (models and
optimizers loaded), after `prepare`, after the policy update and after the critic's gives the
peak of each phase. Writes bench/results/memory_step.json (after every configuration).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

CONFIGS = {
    "fp32_full_logits_before": ["trainer.logprob_chunk=0"],
    "fp32_chunk256_after": ["trainer.logprob_chunk=256"],
    "bf16_autocast_chunk256": ["trainer.logprob_chunk=256", "trainer.bf16=true"],
    "bf16_weights_chunk256": ["trainer.logprob_chunk=256", "model.dtype=bfloat16"],
    "fp32_chunk256_grad_ckpt": ["trainer.logprob_chunk=256", "model.gradient_checkpointing=true"],
}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def one(a: argparse.Namespace, overrides: list[str]) -> dict:
    import torch

    from zerotir import build
    from zerotir.algos.estimators import ESTIMATORS, AdvantageInputs
    from zerotir.config import build_config
    from zerotir.types import Trajectory

    cfg = build_config(
        "toy-zerotir",
        overrides=[
            f"model.path={a.model}",
            "algo.name=ppo",
            "algo.critic_lr=1e-5",
            f"algo.critic_steps={a.critic_steps}",
            "algo.group_size=2",
            f"trainer.micro_batch_size={a.micro}",
            f"trainer.threads={a.threads}",
            f"rollout.max_response_len={a.response}",
            *overrides,
        ],
    )
    build.apply_runtime(cfg)
    torch.manual_seed(0)
    learner, tok = build.build_learner(cfg, a.model)
    g = torch.Generator().manual_seed(0)
    V = learner.policy.config.vocab_size
    trajs = []
    for i in range(a.micro):
        ids = torch.randint(10, V, (64 + a.response,), generator=g).tolist()
        trajs.append(
            Trajectory(
                prompt_ids=ids[:64],
                response_ids=ids[64:],
                action_mask=[1] * a.response,
                rollout_logprobs=[-2.0] * a.response,
                reward=float(i % 2),
            )  # fmt: skip
        )
    loaded = _rss_gb()
    t0 = time.perf_counter()
    lb = learner.prepare(trajs, recompute=True)
    al = cfg.algo
    adv, ret = ESTIMATORS[al.name](
        AdvantageInputs(
            lb.rewards, lb.tokens.action_mask, al.group_size, None, 0.0, lb.values, al.gamma, al.lam
        )
    )
    from zerotir.train.learner import Advantages

    phases = {"prepare_gb": round(_rss_gb(), 3)}
    update_critic = learner._update_critic

    def critic_phase(*args):  # the peak so far is the policy update's (ru_maxrss only grows)
        phases["policy_update_gb"] = round(_rss_gb(), 3)
        return update_critic(*args)

    learner._update_critic = critic_phase  # type: ignore[method-assign]
    m = learner.train_on_batch(lb, Advantages(adv, ret))
    return {
        "overrides": overrides,
        "rss_loaded_gb": round(loaded, 3),
        "rss_peak_gb": round(_rss_gb(), 3),
        "step_peak_over_loaded_gb": round(_rss_gb() - loaded, 3),
        "peak_through": phases,
        "step_s": round(time.perf_counter() - t0, 1),
        "policy_loss": m["train/policy_loss"],
        "value_loss": m["train/value_loss"],
        "entropy": m["train/entropy"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="/work/models/smollm2-135m")
    p.add_argument("--response", type=int, default=512)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--critic-steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", help="one configuration name (internal: the child process)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma list of configuration names")
    a = p.parse_args()
    if a.only:
        print(json.dumps(one(a, CONFIGS[a.only])))
        return
    runs: dict = {}
    for name in a.configs.split(","):
        cmd = [sys.executable, __file__, "--only", name, "--model", a.model, "--response", str(a.response),
               "--micro", str(a.micro), "--critic-steps", str(a.critic_steps), "--threads", str(a.threads)]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            runs[name] = {
                "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc {r.returncode}"
            }
        else:
            runs[name] = json.loads(r.stdout.strip().splitlines()[-1])
        print(name, runs[name], flush=True)
        _write(a, runs)


def _write(a: argparse.Namespace, runs: dict) -> None:
    settings = {"model": a.model, "prompt_tokens": 64, "response_tokens": a.response, "micro_batch": a.micro,
                "sequences": a.micro, "critic_steps": a.critic_steps, "threads": a.threads,
                "peak": "resource.getrusage(RUSAGE_SELF).ru_maxrss of a fresh process per configuration"}  # fmt: skip
    print(write_result("memory_step", {"settings": settings, "runs": runs}))


if __name__ == "__main__":
    main()
