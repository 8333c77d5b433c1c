"""`zerotir toy pretrain`: pre-train the tiny base model on the synthetic corpus.

Documents are packed into fixed-length rows separated by EOS (standard LM pre-training). The result
is saved with `save_pretrained`, so it loads through exactly the same code path as a Qwen2.5 base
model, and a `pretrain.json` records the recipe that made it.

`init` continues from a saved model instead of a random one (a second stage on another corpus mix:
the demo's base is `toy-v1` plus 200 steps of the `copy` mix); the recipe then records the stages.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch

from zerotir import console
from zerotir.errors import TrainingInterrupted, UsageError
from zerotir.toy.corpus import CHAIN_DOCUMENTS, CHAIN_SHARE, MIXES, corpus_stream
from zerotir.toy.model import build_tiny_model
from zerotir.toy.tokenizer import build_byte_tokenizer

log = logging.getLogger(__name__)


def packed_batches(tokenizer, seed: int, batch: int, seq_len: int, easy_frac: float, mix: str = "default"):
    mixture = MIXES[mix]  # a mix with chain documents also asks chains in its questions
    chains = any(kind in mixture for kind in CHAIN_DOCUMENTS)
    stream = corpus_stream(seed, easy_frac, mixture, CHAIN_SHARE if chains else 0.0)
    buf: list[int] = []
    eos = tokenizer.eos_token_id
    while True:
        while len(buf) < batch * (seq_len + 1):
            buf.extend(tokenizer.encode(next(stream), add_special_tokens=False) + [eos])
        rows = [buf[i * (seq_len + 1) : (i + 1) * (seq_len + 1)] for i in range(batch)]
        buf = buf[batch * (seq_len + 1) :]
        yield torch.tensor(rows, dtype=torch.long)


def pretrain(
    out_dir: str | Path,
    steps: int = 900,
    batch: int = 32,
    seq_len: int = 256,
    lr: float = 2e-3,
    warmup: int = 40,
    easy_frac: float = 0.5,
    seed: int = 0,
    hidden: int = 192,
    layers: int = 4,
    resume: bool = False,
    save_every: int = 100,
    init: str | None = None,
    mix: str = "default",
) -> dict:
    """Train and save into `out_dir`. Checkpoints (the trainer's atomic format, under
    `out_dir/checkpoints`) every `save_every` steps and on SIGINT/SIGTERM, which then raises
    TrainingInterrupted; `resume` continues from the newest one with the same result as an
    uninterrupted run (the corpus stream is replayed to the saved step)."""
    if mix not in MIXES:
        raise UsageError(f"zerotir toy pretrain: unknown corpus mix {mix!r} (one of: {', '.join(MIXES)})")
    recipe = {"steps": steps, "batch": batch, "seq_len": seq_len, "lr": lr, "warmup": warmup,
              "easy_frac": easy_frac, "seed": seed, "hidden": hidden, "layers": layers}  # fmt: skip
    if mix != "default":
        recipe["mix"] = mix
    out_dir = Path(out_dir)
    ckpt_root = out_dir / "checkpoints"
    torch.manual_seed(seed)
    tok = build_byte_tokenizer()
    if init is None:
        model = build_tiny_model(tok, seed=seed, hidden=hidden, layers=layers)
    else:
        model, stage = _load_init(init, tok)
        recipe.update(init=init, hidden=model.config.hidden_size, layers=model.config.num_hidden_layers)
        recipe["init_recipe"] = stage
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    start, losses, seconds = 0, [], 0.0
    restore = _latest_checkpoint(ckpt_root) if resume else None
    if restore is not None:
        if restore["recipe"] != recipe:
            was = restore["recipe"]
            diff = ", ".join(f"{k} {was.get(k)!r} (now {recipe.get(k)!r})" for k in sorted(set(was) | set(recipe))
                             if was.get(k) != recipe.get(k))  # fmt: skip
            raise UsageError(f"{out_dir}: its checkpoint was made with other settings: {diff}; "
                             f"resume with the command it printed")  # fmt: skip
        model.load_state_dict(restore["model"])
        opt.load_state_dict(restore["optimizer"])
        start, losses, seconds = restore["step"], restore["losses"], restore["seconds"]
        torch.set_rng_state(restore["torch_rng"])
    elif resume and (out_dir / "pretrain.json").exists():
        # A finished run keeps no checkpoint: "resuming" it started a fresh default recipe over the
        # finished model (new-user review).
        raise UsageError(f"{out_dir} holds a finished model and no checkpoint: nothing to resume "
                         "(pass --overwrite to train a new one there, or choose another --out)")  # fmt: skip
    elif resume:
        log.warning("no valid checkpoint in %s: starting from step 0", ckpt_root)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        p = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    batches = packed_batches(tok, seed, batch, seq_len, easy_frac, mix)
    for _ in range(start):  # the stream is deterministic: skip what the checkpointed steps consumed
        next(batches)

    def save(step: int) -> Path:
        payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                   "step": step, "losses": losses, "recipe": recipe, "seconds": seconds + time.time() - t0}  # fmt: skip
        return _save_checkpoint(ckpt_root, step, payload)

    stop: list[int] = []

    def on_signal(signum, _frame) -> None:
        stop.append(signum)
        console.notice(f"zerotir: signal {signum}: finishing the current step, then saving a checkpoint")

    t0 = time.time()
    model.train()
    bar = console.progress(total=steps, initial=start, desc="pretrain")
    try:
        with console.stop_signals(on_signal):
            for step in range(start, steps):
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                x = next(batches)
                logits = model(input_ids=x[:, :-1], use_cache=False).logits  # (B, T, V)
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1)
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}", refresh=False)
                bar.update(1)
                done = step + 1
                if stop:
                    path = save(done)
                    raise TrainingInterrupted(done, path, resume_cmd=_resume_cmd(out_dir, recipe))
                if save_every and done % save_every == 0 and done < steps:
                    save(done)
    finally:
        bar.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    record = {
        **recipe,
        "params": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
        "seconds": round(seconds + time.time() - t0, 1),
    }
    (out_dir / "pretrain.json").write_text(json.dumps(record, indent=2))
    shutil.rmtree(ckpt_root, ignore_errors=True)  # the finished weights are in out_dir itself
    return record


def _load_init(init: str, tok) -> tuple[torch.nn.Module, dict | None]:
    """The model a second stage starts from, and the recipe that made it (its pretrain.json)."""
    from transformers import AutoModelForCausalLM

    from zerotir.models import resolve_model_path

    path = Path(resolve_model_path(init))  # a missing directory: ModelLoadError, which says so
    model = AutoModelForCausalLM.from_pretrained(path)
    if model.config.vocab_size != len(tok):
        raise UsageError(
            f"zerotir toy pretrain --init {init}: vocabulary {model.config.vocab_size} is not the toy "
            f"byte tokenizer's {len(tok)}"
        )
    rec = path / "pretrain.json"
    return model, json.loads(rec.read_text()) if rec.exists() else None


def _save_checkpoint(ckpt_root: Path, step: int, payload: dict, keep: int = 2) -> Path:
    """One file per checkpoint, written to a temp name, fsynced and renamed (atomic): a crash
    mid-write leaves the previous one. (The toy layer does not import the trainer's checkpoints.)"""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_root / f".tmp_step_{step:07d}_{os.getpid()}.pt"
    torch.save(payload, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    final = ckpt_root / f"step_{step:07d}.pt"
    os.replace(tmp, final)
    for old in sorted(ckpt_root.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return final


def _latest_checkpoint(ckpt_root: Path) -> dict | None:
    """The newest checkpoint that loads (an unreadable one is skipped with a warning)."""
    for p in sorted(ckpt_root.glob("step_*.pt"), reverse=True):
        try:
            return torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file: try the previous one
            log.warning("skipping checkpoint %s: %s", p, e)
    return None


def _resume_cmd(out_dir: Path, recipe: dict) -> str:
    params = inspect.signature(pretrain).parameters  # the CLI's defaults are pretrain's own
    extra = "".join(
        f" --{k.replace('_', '-')} {recipe[k]}"
        for k in ("steps", "seed", "easy_frac", "lr", "warmup", "init", "mix")
        if recipe.get(k, params[k].default) != params[k].default
    )
    return f"zerotir toy pretrain --out {out_dir} --resume{extra}"


def record_base_metrics(model_dir: str | Path, eval_size: int = 256, max_response_len: int = 160) -> dict:
    """Evaluate a toy base model on the held-out split and write `base_metrics.json` beside it.

    Greedy without tools (deterministic: the regression reference for the shipped weights) and
    sampled with tools (how often the base model spontaneously writes code: the rare habit RL amplifies).
    """
    from zerotir import build
    from zerotir.config import build_config
    from zerotir.eval.runner import SUMMARY_KEYS as keys
    from zerotir.eval.runner import evaluate_rows
    from zerotir.rollout import SamplingParams
    from zerotir.toy.world import test_split

    model_dir = Path(model_dir)
    cfg = build_config(
        overrides=[
            f"model.path={model_dir}",
            "rollout.template=toy-zerotir",
            f"rollout.max_response_len={max_response_len}",
            "rollout.max_tool_calls=2",
        ]
    )
    policy, tok = build.load_policy(cfg)
    eng = build.make_engine(cfg, policy, tok)
    rows = [p.to_row() for p in test_split(eval_size, cfg.data.easy_frac)]
    no_tools = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"template": "toy-zerorl"})})
    greedy = evaluate_rows(
        eng,
        None,
        rows,
        build.make_task(no_tools, tok).template,
        build.tool_loop_config(no_tools, max_tool_calls=0),
        SamplingParams(0.0, 1.0, max_response_len, seed=0),
    )["metrics"]
    sb = build.make_sandbox(cfg)
    try:
        sampled = evaluate_rows(
            eng,
            sb,
            rows,
            build.make_task(cfg, tok).template,
            build.tool_loop_config(cfg),
            SamplingParams(1.0, 1.0, max_response_len, seed=0),
            n=4,
        )["metrics"]
    finally:
        if sb is not None:
            sb.close()
    rec = {
        "eval_size": eval_size,
        "max_response_len": max_response_len,
        "greedy_no_tool": {k: greedy[k] for k in keys if k in greedy},
        "sampled_tool": {k: sampled[k] for k in keys if k in sampled},
    }
    (model_dir / "base_metrics.json").write_text(json.dumps(rec, indent=2))
    return rec
