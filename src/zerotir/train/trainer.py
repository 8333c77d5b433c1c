"""The single-process trainer (CPU or one GPU): rollout -> reward -> filter -> advantages -> update.

Reads top to bottom: `Trainer.__init__` sets up models, optimizer, sandbox and data (or restores
them from the newest valid checkpoint); `fit` runs steps, evaluates, checkpoints, and stops cleanly
on SIGTERM/SIGINT after saving. The trainer does not know which algorithm it runs beyond looking up
`algo.name` in `ESTIMATORS`; PPO adds a critic.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zerotir.algos import accuracy_band_keep, entropy_from_logits, kl_penalty, masked_mean, nonuniform_keep
from zerotir.algos.estimators import ESTIMATORS, AdvantageInputs
from zerotir.algos.filters import soft_overlong_penalty
from zerotir.algos.losses import aggregate, policy_loss, value_loss
from zerotir.config import RunConfig, config_to_yaml
from zerotir.data import load_dataset_rows
from zerotir.errors import SandboxFailureAbort, TrainingInterrupted
from zerotir.eval.runner import evaluate_rows
from zerotir.logger import MetricsLogger
from zerotir.reward import math_reward
from zerotir.rollout import SamplingParams, ToolLoopConfig, get_template, rollout_metrics, run_tool_rollout
from zerotir.train import checkpoint as ckpt
from zerotir.train.batch import (
    TokenBatch,
    ValueModel,
    batched_logprobs,
    collate,
    micro_batches,
    response_logits,
    token_logprobs,
)
from zerotir.train.models import load_causal_lm, load_tokenizer
from zerotir.types import Trajectory

log = logging.getLogger(__name__)


def make_sandbox(cfg: RunConfig):
    if not get_template(cfg.rollout.template).uses_tools or cfg.rollout.max_tool_calls == 0:
        return None
    if cfg.sandbox.mode == "http":
        from zerotir.sandbox.client import HttpSandbox

        return HttpSandbox(cfg.sandbox.url)
    from zerotir.sandbox.base import LocalSandbox
    from zerotir.sandbox.pool import PoolConfig

    return LocalSandbox(
        PoolConfig(
            workers=cfg.sandbox.workers,
            slots_per_worker=cfg.sandbox.slots,
            isolation=cfg.sandbox.isolation,
            memory_mb=cfg.sandbox.memory_mb,
        )
    )


def make_engine(cfg: RunConfig, policy, tokenizer):
    if cfg.rollout.engine == "vllm":
        if cfg.rollout.vllm_async:
            from zerotir.rollout.vllm_async import AsyncVLLMEngine as VLLMEngine
        else:
            from zerotir.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(
            cfg.model.path,
            tokenizer,
            dtype=cfg.model.dtype,
            gpu_memory_utilization=cfg.rollout.vllm_gpu_memory_utilization,
            seed=cfg.trainer.seed,
        )
    from zerotir.rollout.hf_engine import HFEngine

    return HFEngine(policy, tokenizer, device=cfg.trainer.device)


def tool_loop_config(cfg: RunConfig, max_tool_calls: int | None = None) -> ToolLoopConfig:
    r = cfg.rollout
    return ToolLoopConfig(
        max_tool_calls=r.max_tool_calls if max_tool_calls is None else max_tool_calls,
        max_response_len=r.max_response_len,
        output_max_tokens=r.output_max_tokens,
        overflow=r.overflow,
        exec_timeout_s=r.exec_timeout_s,
        stateful=r.stateful,
        scheduler=r.scheduler,
    )


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path,
        resume: bool = False,
        reward_fn: Callable[[str, str], float] | None = None,
    ):
        """`reward_fn(response_text, answer) -> float` replaces the verified math reward (an extension seam)."""
        self.cfg = cfg
        self.reward_fn = reward_fn
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_root = self.run_dir / "checkpoints"
        t = cfg.trainer
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = t.device
        self.step = 0
        self.data_pos = 0
        restore = ckpt.latest_valid_checkpoint(self.ckpt_root) if resume else None
        if resume and restore is None:
            log.warning("no valid checkpoint in %s: starting from step 0", self.ckpt_root)
        self._seed_everything(t.seed)

        model_src = str(restore / "policy") if restore else cfg.model.path
        self.tokenizer = load_tokenizer(model_src)
        self.policy = load_causal_lm(model_src, cfg.model.dtype, self.device)
        if cfg.model.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable()
        self.ref = None
        if cfg.algo.kl_coef > 0:
            self.ref = load_causal_lm(
                cfg.model.ref_path or cfg.model.path, cfg.model.dtype, self.device
            ).eval()
            self.ref.requires_grad_(False)
        self.critic = None
        if cfg.algo.name == "ppo":
            from transformers import AutoModel

            from zerotir.train.models import resolve_model_path

            backbone = AutoModel.from_pretrained(resolve_model_path(cfg.model.critic_path or cfg.model.path))
            self.critic = ValueModel(backbone, backbone.config.hidden_size).to(self.device)
            self.critic_opt = torch.optim.AdamW(self.critic.parameters(), lr=cfg.algo.critic_lr)
        self.opt = torch.optim.AdamW(self.policy.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_lambda)
        self.engine = make_engine(cfg, self.policy, self.tokenizer)
        self.template = get_template(cfg.rollout.template)
        self.tool_cfg = tool_loop_config(cfg)
        self.sandbox = make_sandbox(cfg)

        d = cfg.data

        def rows(source: str, size: int, split: str) -> list[dict]:
            return load_dataset_rows(
                source, d.problem_key, d.answer_key, toy_size=size, toy_easy_frac=d.easy_frac, toy_split=split
            )

        self.train_rows = rows(d.train, d.train_size, "train")
        self.eval_rows = rows(d.eval, d.eval_size, "test")[: d.eval_size] if d.eval else None
        if restore:
            self._restore(restore)
            self._sync_engine(self.step)  # the engine was built from model.path: give it the restored policy
        self.logger = MetricsLogger(
            self.run_dir,
            cfg.log.tensorboard,
            cfg.log.wandb,
            cfg.log.wandb_project,
            cfg.name,
            cfg.model_dump(mode="json"),
            resume_from_step=self.step if resume else None,
        )
        (self.run_dir / "config.yaml").write_text(config_to_yaml(cfg))
        self._stop_requested = False

    # ------------------------------------------------------------------ setup helpers
    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _lr_lambda(self, step: int) -> float:
        t = self.cfg.trainer
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.schedule == "cosine":
            p = (step - t.warmup_steps) / max(1, t.total_steps - t.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
        return 1.0

    def _restore(self, path: Path) -> None:
        state = ckpt.load_payload(path, "trainer_state")
        self.step, self.data_pos = state["step"], state["data_pos"]
        self.opt.load_state_dict(ckpt.load_payload(path, "optimizer"))
        self.sched.load_state_dict(ckpt.load_payload(path, "scheduler"))
        if self.critic is not None:
            self.critic.load_state_dict(ckpt.load_payload(path, "critic"))
            self.critic_opt.load_state_dict(ckpt.load_payload(path, "critic_optimizer"))
        ckpt.set_rng_state(ckpt.load_payload(path, "rng"))
        log.info("resumed from %s (step %d)", path, self.step)

    def save(self) -> Path:
        payload = {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": ckpt.rng_state(),
            "trainer_state": {
                "step": self.step,
                "data_pos": self.data_pos,
                "config": self.cfg.model_dump(mode="json"),
            },
        }
        if self.critic is not None:
            payload["critic"] = self.critic.state_dict()
            payload["critic_optimizer"] = self.critic_opt.state_dict()
        return ckpt.save_checkpoint(
            self.ckpt_root,
            self.step,
            self.policy,
            self.tokenizer,
            payload,
            keep=self.cfg.trainer.keep_checkpoints,
        )

    # ------------------------------------------------------------------ data
    def _next_rows(self, n: int) -> list[dict]:
        rows = []
        N = len(self.train_rows)
        for _ in range(n):
            epoch, i = divmod(self.data_pos, N)
            order = self._order(epoch)
            rows.append(self.train_rows[order[i]])
            self.data_pos += 1
        return rows

    def _order(self, epoch: int) -> list[int]:
        if getattr(self, "_order_cache", (None,))[0] != epoch:
            idx = list(range(len(self.train_rows)))
            if self.cfg.data.shuffle:
                random.Random(self.cfg.trainer.seed * 7919 + epoch).shuffle(idx)
            self._order_cache = (epoch, idx)
        return self._order_cache[1]

    # ------------------------------------------------------------------ rollout
    def _rollout(self, rows: list[dict], seed: int, timings: dict) -> list[Trajectory]:
        G = self.cfg.algo.group_size
        r = self.cfg.rollout
        prompts, meta = [], []
        for gi, row in enumerate(rows):
            ids = self.tokenizer.encode(self.template.render(row["problem"]), add_special_tokens=False)
            for _ in range(G):
                prompts.append(ids)
                meta.append((gi, row))
        params = SamplingParams(r.temperature, r.top_p, r.max_response_len, seed)
        trajs = run_tool_rollout(
            self.engine, self.sandbox, prompts, self.template, self.tool_cfg, params, timings
        )
        for tr, (gi, row) in zip(trajs, meta):
            tr.group_id, tr.answer = gi, row["answer"]
            if tr.excluded:
                tr.reward = 0.0
            elif self.reward_fn is not None:
                tr.reward = float(self.reward_fn(tr.text, row["answer"]))
            else:
                tr.reward = math_reward(
                    tr.text, row["answer"], require_outside_output=r.answer_outside_output
                )
            tr.correct = tr.reward >= 1.0
            if r.void_turn_filter and tr.meta.get("void_turn"):
                tr.excluded = True
        return trajs

    def collect(self, step: int, timings: dict) -> tuple[list[Trajectory], list[Trajectory], dict]:
        """Sample a step's groups, then filter them. Returns (kept, all sampled, filter stats)."""
        a, t = self.cfg.algo, self.cfg.trainer
        G = a.group_size
        kept: list[Trajectory] = []
        sampled: list[Trajectory] = []
        groups_total = groups_kept = 0
        rounds = 1 + (a.max_resample_rounds if a.filter == "dynamic" else 0)
        for rnd in range(rounds):
            need = t.prompts_per_step - groups_kept if a.filter == "dynamic" else t.prompts_per_step
            if need <= 0:
                break
            rows = self._next_rows(need)
            trajs = self._rollout(rows, seed=t.seed * 1_000_003 + step * 101 + rnd, timings=timings)
            sampled += trajs
            rewards = torch.tensor([tr.reward for tr in trajs])
            correct = torch.tensor([tr.correct for tr in trajs])
            if a.filter == "accuracy_band":
                keep = accuracy_band_keep(correct, G, a.filter_low, a.filter_high)
            elif a.filter == "dynamic":
                keep = nonuniform_keep(rewards, G)
            else:
                keep = torch.ones(len(rows), dtype=torch.bool)
            groups_total += len(rows)
            for g in range(len(rows)):
                if keep[g] and (a.filter != "dynamic" or groups_kept < t.prompts_per_step):
                    kept += trajs[g * G : (g + 1) * G]
                    groups_kept += 1
        stats = {
            "filter/kept_groups_ratio": groups_kept / max(1, groups_total),
            "filter/groups_sampled": groups_total,
        }
        return kept, sampled, stats

    # ------------------------------------------------------------------ update
    def _apply_overlong(self, trajs: list[Trajectory]) -> None:
        a = self.cfg.algo
        for tr in trajs:
            if tr.finish_reason == "length":
                if a.overlong == "mask":
                    tr.excluded = True
                elif a.overlong == "soft":
                    pen = soft_overlong_penalty(
                        torch.tensor([len(tr.response_ids)]),
                        self.cfg.rollout.max_response_len,
                        a.overlong_cache,
                    )
                    tr.reward = (tr.reward or 0.0) + float(pen[0])

    def update(self, trajs: list[Trajectory]) -> dict[str, float]:
        a, t = self.cfg.algo, self.cfg.trainer
        temp = self.cfg.rollout.temperature or 1.0
        batch = collate(trajs, self.tokenizer.pad_token_id)
        mask = batch.action_mask
        rewards = torch.tensor([tr.reward or 0.0 for tr in trajs], dtype=torch.float32)
        if self.cfg.rollout.engine == "vllm":
            batch.old_logprobs = batched_logprobs(self.policy, batch, t.micro_batch_size, temp, self.device)
        ref_lp = None
        kl_tok = None
        if self.ref is not None:
            ref_lp = batched_logprobs(self.ref, batch, t.micro_batch_size, temp, self.device)
            kl_tok = kl_penalty(batch.old_logprobs, ref_lp, a.kl_estimator) * mask
        values = None
        if self.critic is not None:
            with torch.no_grad():
                values = torch.cat(
                    [
                        self.critic(batch.select(idx), self.device).float().cpu()
                        for idx in micro_batches(len(trajs), t.micro_batch_size)
                    ]
                )
            values = values * mask
        adv, returns = ESTIMATORS[a.name](
            AdvantageInputs(
                rewards,
                mask,
                a.group_size,
                kl_tok if a.kl_in_reward else None,
                a.kl_coef if a.kl_in_reward else 0.0,
                values,
                a.gamma,
                a.lam,
            )
        )

        B = len(trajs)
        n_tokens = mask.sum().clamp(min=1.0)
        acc: dict[str, float] = {}
        self.policy.train()
        for _ in range(t.ppo_epochs):
            self.opt.zero_grad(set_to_none=True)
            for idx in micro_batches(B, t.micro_batch_size):
                mb = batch.select(idx)
                m = mb.action_mask
                if m.sum() == 0:
                    continue
                with torch.autocast(
                    "cuda", dtype=torch.bfloat16, enabled=t.bf16 and self.device.startswith("cuda")
                ):
                    logits = response_logits(self.policy, mb, self.device)
                lp = token_logprobs(logits, mb.response_ids, temp).cpu()  # .cpu() is a no-op on CPU
                # weight so that the sum over micro-batches equals the full-batch aggregate
                w = (m.sum() / n_tokens) if a.loss_agg == "token-mean" else torch.tensor(len(idx) / B)
                out = policy_loss(
                    lp,
                    mb.old_logprobs,
                    adv[idx],
                    m,
                    clip_low=a.clip_low,
                    clip_high=a.clip_high,
                    dual_clip=a.dual_clip,
                    agg=a.loss_agg,
                    ratio_level=a.ratio_level,
                    norm_len=self.cfg.rollout.max_response_len,
                )
                loss = out.loss
                with torch.no_grad() if a.entropy_coef == 0 else torch.enable_grad():
                    ent = entropy_from_logits(logits).cpu()
                    ent_mean = aggregate(ent, m, "token-mean")
                if a.entropy_coef:
                    loss = loss - a.entropy_coef * ent_mean
                if self.ref is not None:
                    kl_now = kl_penalty(lp, ref_lp[idx], a.kl_estimator)
                    kl_mean = aggregate(kl_now, m, "token-mean")
                    if not a.kl_in_reward:
                        loss = loss + a.kl_coef * kl_mean
                    acc["train/kl"] = acc.get("train/kl", 0.0) + float(kl_mean.detach()) * float(w)
                (loss * w).backward()
                acc["train/policy_loss"] = acc.get("train/policy_loss", 0.0) + float(
                    out.loss.detach()
                ) * float(w)
                acc["train/entropy"] = acc.get("train/entropy", 0.0) + float(ent_mean) * float(w)
                acc["train/clip_ratio"] = acc.get("train/clip_ratio", 0.0) + float(
                    out.metrics["clip_ratio"]
                ) * float(w)
                acc["train/ratio_max"] = max(acc.get("train/ratio_max", 0.0), float(out.metrics["ratio_max"]))
            gn = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), t.grad_clip)
            acc["train/grad_norm"] = float(gn)
            self.opt.step()
        acc = {
            k: (v / t.ppo_epochs if k not in ("train/ratio_max", "train/grad_norm") else v)
            for k, v in acc.items()
        }
        acc["train/lr"] = self.sched.get_last_lr()[0]
        self.sched.step()
        if self.critic is not None:
            acc["train/value_loss"] = self._update_critic(batch, returns, values)
        acc["train/adv_abs_mean"] = float(masked_mean(adv.abs(), mask))
        acc["time/weight_sync_s"] = self._sync_engine(self.step + 1)
        return acc

    def _sync_engine(self, version: int) -> float:
        """Push the policy to the rollout engine as policy version `version` (updates applied so far);
        a no-op copy when the engine shares the module. Returns the seconds it took."""
        t0 = time.perf_counter()
        sync = getattr(self.engine, "sync_weights", None)
        if sync is not None:
            sync(self.policy.state_dict(), version)
        else:
            self.engine.load_weights(self.policy.state_dict())
        return time.perf_counter() - t0

    def _update_critic(self, batch: TokenBatch, returns: torch.Tensor, old_values: torch.Tensor) -> float:
        a, t = self.cfg.algo, self.cfg.trainer
        B = batch.input_ids.size(0)
        last = 0.0
        for _ in range(a.critic_steps):
            self.critic_opt.zero_grad(set_to_none=True)
            total = 0.0
            for idx in micro_batches(B, t.micro_batch_size):
                mb = batch.select(idx)
                v = self.critic(mb, self.device).float().cpu()
                out = value_loss(v, old_values[idx], returns[idx], mb.action_mask, a.value_clip)
                w = len(idx) / B
                (out.loss * w).backward()
                total += float(out.loss.detach()) * w
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), t.grad_clip)
            self.critic_opt.step()
            last = total
        return last

    # ------------------------------------------------------------------ loop
    def train_step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        kept, sampled, fstats = self.collect(self.step, timings)
        t_roll = time.perf_counter() - t0
        fail = sum(tr.finish_reason == "sandbox_error" for tr in sampled) / max(1, len(sampled))
        if fail > self.cfg.rollout.sandbox_fail_threshold:
            raise SandboxFailureAbort(
                f"step {self.step}: {fail:.0%} of trajectories hit sandbox infrastructure failures "
                f"(threshold {self.cfg.rollout.sandbox_fail_threshold:.0%}); is the sandbox at "
                f"{self.cfg.sandbox.url if self.cfg.sandbox.mode == 'http' else 'local pool'} healthy?"
            )
        metrics = rollout_metrics(sampled)
        metrics.update(fstats)
        version = getattr(self.engine, "weight_version", None)
        if version is not None:  # the policy version the step was sampled from (a synced engine)
            metrics["rollout/policy_version"] = version
        t1 = time.perf_counter()
        if kept:
            self._apply_overlong(kept)
            metrics.update(self.update(kept))
        t_train = time.perf_counter() - t1
        step_s = time.perf_counter() - t0
        n_tok = sum(len(tr.response_ids) for tr in sampled)
        metrics.update(
            {
                "time/rollout_s": t_roll,
                "time/sandbox_s": timings.get("sandbox_s", 0.0),
                "time/generate_s": timings.get("generate_s", 0.0),
                "time/train_s": t_train,
                "time/step_s": step_s,
                "tokens/per_s": n_tok / max(step_s, 1e-9),
                "data/position": self.data_pos,
            }
        )
        return metrics

    def evaluate(self, max_tool_calls: int | None = None) -> dict[str, float]:
        if not self.eval_rows:
            return {}
        e = self.cfg.eval
        tool_cfg = tool_loop_config(self.cfg, e.max_tool_calls if max_tool_calls is None else max_tool_calls)
        res = evaluate_rows(
            self.engine,
            self.sandbox,
            self.eval_rows,
            self.template,
            tool_cfg,
            SamplingParams(
                e.temperature, e.top_p, self.cfg.rollout.max_response_len, seed=self.cfg.trainer.seed
            ),
            n=e.n_samples,
            answer_outside_output=self.cfg.rollout.answer_outside_output,
        )
        name = Path(self.cfg.data.eval).stem if self.cfg.data.eval else "eval"
        return {f"eval/{name}/{k}": v for k, v in res["metrics"].items() if isinstance(v, (int, float))}

    def _on_signal(self, signum, _frame) -> None:
        log.warning("signal %d: finishing the current step, then saving a checkpoint", signum)
        self._stop_requested = True

    def fit(self) -> dict[str, float]:
        t = self.cfg.trainer
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in old:
            try:
                signal.signal(s, self._on_signal)
            except ValueError:  # not the main thread
                pass
        last: dict[str, float] = {}
        try:
            bar = tqdm(
                total=t.total_steps,
                initial=self.step,
                desc=self.cfg.name,
                dynamic_ncols=True,
                disable=not self.cfg.log.progress,
            )
            while self.step < t.total_steps and not self._stop_requested:
                metrics = self.train_step()
                if t.eval_every and (self.step + 1) % t.eval_every == 0:
                    metrics.update(self.evaluate())
                self.logger.log(self.step, metrics)
                last = metrics
                self.step += 1
                bar.update(1)
                bar.set_postfix(
                    acc=f"{metrics.get('reward/accuracy', 0):.2f}",
                    code=f"{metrics.get('rollout/code_ratio', 0):.2f}",
                )
                if t.save_every and self.step % t.save_every == 0 and self.step < t.total_steps:
                    self.save()
            bar.close()
            path = self.save()
            if self._stop_requested:
                raise TrainingInterrupted(self.step, path)
        finally:
            for s, h in old.items():
                try:
                    signal.signal(s, h)
                except ValueError:
                    pass
        return last

    def close(self) -> None:
        self.logger.close()
        if self.sandbox is not None:
            self.sandbox.close()


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    reward_fn: Callable[[str, str], float] | None = None,
) -> Trainer:
    trainer = Trainer(cfg, run_dir, resume=resume, reward_fn=reward_fn)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer


__all__ = ["Trainer", "train", "SandboxFailureAbort", "TrainingInterrupted"]
