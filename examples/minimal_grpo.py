"""ZeroTIR in one file: GRPO with spontaneous code execution, top to bottom, on a laptop CPU.

Every step is the package's own part, wired by hand so that nothing is hidden:

  1. a model      the shipped toy base model (zerotir.models)
  2. a sandbox    the in-process executor pool (zerotir.sandbox)
  3. an engine    our transformers decode loop (zerotir.rollout.hf_engine)
  4. a task       prompt template + verified math reward (zerotir.task)
  5. a rollout    generate -> pause at ```python -> execute -> inject ```output -> resume
  6. advantages   GRPO: rewards normalised within each prompt's group (zerotir.algos)
  7. a loss       rl_loss: clipped policy term (+ KL, entropy when enabled) (zerotir.algos.loss)
  8. an update    AdamW on the policy; the engine shares the module, so no weight sync

    python examples/minimal_grpo.py --steps 20

The full trainer (zerotir.train) adds a reference/critic, filters, checkpoints, evaluation and
logging around exactly these steps; `zerotir train --preset toy-zerotir` runs it.
"""

from __future__ import annotations

import argparse

import torch

from zerotir.algos import broadcast_to_tokens, grpo_advantages
from zerotir.algos.loss import LossInputs, LossSettings, rl_loss
from zerotir.models import load_causal_lm, load_tokenizer
from zerotir.rollout import SamplingParams, ToolLoopConfig, get_template, rollout_metrics
from zerotir.rollout.hf_engine import HFEngine
from zerotir.rollout.tools import PythonTool
from zerotir.sandbox.base import LocalSandbox
from zerotir.sandbox.pool import PoolConfig
from zerotir.task import MathTask, sample_rows
from zerotir.toy.world import train_split
from zerotir.train.batch import collate, response_logits, token_logprobs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="samples per prompt (the GRPO group)")
    p.add_argument("--max-len", type=int, default=160, help="model + injected tokens per response")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)

    # 1. The model and its tokenizer. `toy` is a ~5M-parameter Llama pre-trained on a synthetic
    #    corpus in which a few percent of solutions call Python: the rare habit RL amplifies.
    tokenizer = load_tokenizer("toy")
    policy = load_causal_lm("toy")
    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.lr)

    # 2. The sandbox: fork servers with numpy/sympy pre-imported; each execution is a fresh process.
    sandbox = LocalSandbox(PoolConfig(workers=1, slots_per_worker=8))

    # 3. The engine samples from the very module we train (token-in, token-out, exact logprobs).
    engine = HFEngine(policy, tokenizer)

    # 4. The task: how a row becomes a prompt and how a finished response is graded.
    task = MathTask(get_template("toy-zerotir"), tokenizer)
    rows = [p.to_row() for p in train_split(4096, 0.4)]

    # 5. The tool protocol: at most 2 executions per response, outputs capped at 64 tokens.
    loop = ToolLoopConfig(max_tool_calls=2, max_response_len=args.max_len, output_max_tokens=64)
    tool = PythonTool(output_max_tokens=64)

    # The loss's hyperparameters: DAPO's clip-higher, token-mean aggregation, no KL, no entropy bonus.
    settings = LossSettings(clip_low=0.2, clip_high=0.28, agg="token-mean", norm_len=args.max_len)

    history = []
    try:
        for step in range(args.steps):
            # ---- rollout: each prompt repeated `group` times; code runs while other rows decode
            batch_rows = [rows[(step * args.prompts + i) % len(rows)] for i in range(args.prompts)]
            repeated = [row for row in batch_rows for _ in range(args.group)]
            params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=args.max_len, seed=step)
            trajs = sample_rows(task, engine, sandbox, repeated, loop, params, tool=tool)

            # ---- reward: verified math equivalence of the final \boxed{} answer; a trajectory the
            #      sandbox failed (infrastructure, not the model's code) is excluded and scores 0
            for tr in trajs:
                tr.reward = 0.0 if tr.excluded else task.score(tr)
                tr.correct = tr.reward >= 1.0

            # ---- advantages: (r - group mean) / group std, on every model token (injected
            #      tool output has action_mask 0: no advantage, no gradient)
            batch = collate(trajs, tokenizer.pad_token_id)
            rewards = torch.tensor([tr.reward for tr in trajs], dtype=torch.float32)
            adv = broadcast_to_tokens(grpo_advantages(rewards, args.group, norm_std=True), batch.action_mask)

            # ---- update: one pass, the whole batch as one micro-batch. The engine's logprobs are
            #      the behaviour policy's (same module), so the first ratio is exactly 1.
            policy.train()
            optimizer.zero_grad(set_to_none=True)
            logits = response_logits(policy, batch)
            logprobs = token_logprobs(logits, batch.response_ids, temperature=1.0)
            out = rl_loss(LossInputs(logprobs, batch.rollout_logprobs, adv, batch.action_mask, settings, logits))
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()

            m = rollout_metrics(trajs)
            row = {
                "step": step,
                "reward": m["reward/mean"],
                "code_ratio": m["rollout/code_ratio"],
                "response_len": m["rollout/response_len_mean"],
                "loss": float(out.metrics["policy_loss"]),
                "entropy": float(out.metrics["entropy"]),
                "ratio_max": float(out.metrics["ratio_max"]),
                "grad_norm": float(grad_norm),
            }
            history.append(row)
            print(
                f"step {step:3d}  reward {row['reward']:.3f}  code {row['code_ratio']:.2f}  "
                f"len {row['response_len']:5.1f}  entropy {row['entropy']:.3f}"
            )
    finally:
        sandbox.close()
    return history


if __name__ == "__main__":
    main()
