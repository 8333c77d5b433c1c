"""The single-process orchestrator (CPU or one GPU): rows -> rollout -> reward -> filter -> advantages
-> learner update -> log / evaluate / checkpoint.

Reads top to bottom: `Trainer.__init__` builds everything through `zerotir.build` (or restores it
from the newest valid checkpoint); `train_step` is one step; `fit` runs steps, evaluates,
checkpoints, and stops cleanly on SIGTERM/SIGINT after saving. The orchestrator never touches an
optimizer (the `Learner` does) and never branches on an algorithm or filter name (registries do).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from zerotir import build, console
from zerotir.algos.filters import GROUP_FILTERS
from zerotir.config import ConfigError, RunConfig, config_to_yaml
from zerotir.errors import SandboxFailureAbort, TrainingInterrupted
from zerotir.eval.runner import BatchScore
from zerotir.inspect import SampleWriter
from zerotir.logger import MetricsLogger
from zerotir.rollout import rollout_metrics
from zerotir.rollout.engine import capabilities_of
from zerotir.rundir import lock_run_dir
from zerotir.task import RewardFn, sample_rows
from zerotir.train import checkpoint as ckpt
from zerotir.train import steps
from zerotir.train.cursor import DataCursor
from zerotir.train.learner import Advantages, LearnerBatch
from zerotir.types import Trajectory

log = logging.getLogger(__name__)


RAY_ONLY: dict[str, tuple] = {
    "max_staleness": (0,),
    "off_policy": (None, "on_policy"),
    "partial_rollouts": (False,),
}
"""`distributed.*` settings that only the Ray pipeline acts on, with their values that mean "off"."""


def check_single_process(cfg: RunConfig) -> None:
    """Refuse the Ray pipeline's settings for the single-process trainer: it trains each step on
    samples of the current policy, so they parsed and did nothing (a silent no-op knob: a user who set
    a staleness bound and a correction believed both were in force)."""
    d = cfg.distributed
    on = [f"distributed.{k}={getattr(d, k)}" for k, off in RAY_ONLY.items() if getattr(d, k) not in off]
    if on:
        raise ConfigError(
            f"{', '.join(on)}: only the Ray pipeline acts on this; set distributed.enabled=true, or drop it "
            "(one process trains synchronously, on fresh samples)"
        )


class Trainer:
    models_in_process = True
    """False for the Ray driver: its learner and engines are actors, so its own CUDA does not matter."""

    def __init__(
        self, cfg: RunConfig, run_dir: str | Path, resume: bool = False, reward_fn: RewardFn | None = None
    ):
        """`reward_fn(response_text, answer) -> float` replaces the verified math reward (an extension
        seam; `rollout.reward: module:function` names one in config)."""
        if self.models_in_process:  # the plain trainer (the Ray driver acts on these settings)
            check_single_process(cfg)  # before anything is written
        self.cfg, t = cfg, cfg.trainer
        self.run_dir = Path(run_dir)
        lock_run_dir(self.run_dir)  # before anything is written: one process per run directory
        self.ckpt_root = self.run_dir / "checkpoints"
        build.apply_runtime(cfg, check_device=self.models_in_process)
        self.step, self.counts = 0, steps.StepCounts()
        restore = ckpt.latest_valid_checkpoint(self.ckpt_root) if resume else None
        if resume and restore is None:
            log.warning("no valid checkpoint in %s: starting from step 0", self.ckpt_root)
        steps.seed_all(t.seed)
        self.learner, self.tokenizer, self.engine = self._build_models(
            str(restore / "policy") if restore else cfg.model.path
        )
        self.task = build.make_task(cfg, self.tokenizer, reward_fn)
        self.tool, self.tool_cfg = build.make_tool(cfg), build.tool_loop_config(cfg)
        self.sandbox = build.make_sandbox(cfg)
        self.cursor = DataCursor(build.load_rows(cfg, "train"), t.seed, cfg.data.shuffle)
        self.eval_rows = build.load_rows(cfg, "eval")
        if restore:
            state = ckpt.load_payload(restore, "trainer_state")
            self.step, self.cursor.pos = state["step"], state["data_pos"]
            self.counts = steps.StepCounts.from_state(state)
            self.learner.load_checkpoint_parts(lambda name: ckpt.load_payload(restore, name))
            ckpt.set_rng_state(ckpt.load_payload(restore, "rng"))
            log.info("resumed from %s (step %d)", restore, self.step)
            self._sync_engine()  # an engine with its own weights (vLLM) was built from model.path
        self.logger = MetricsLogger(
            self.run_dir, cfg.log.tensorboard, cfg.log.wandb, cfg.log.wandb_project, cfg.name,
            cfg.model_dump(mode="json"), resume_from_step=self.step if resume else None,
        )  # fmt: skip
        self.samples = SampleWriter(self.run_dir, self.tokenizer.decode, cfg.log.samples_per_step,
                                    cfg.log.samples_max_per_run, t.total_steps, cfg.rollout.allow_printed_answers,
                                    resume_from_step=self.step if resume else None)  # fmt: skip
        self._update_tokens: dict[str, torch.Tensor] = {}  # the last update's per-token values, for samples
        (self.run_dir / "config.yaml").write_text(config_to_yaml(cfg))
        self._stop_requested = False

    def _build_models(self, model_src: str):
        """(learner, tokenizer, engine) in this process; the Ray driver returns actor proxies instead."""
        learner, tokenizer = build.build_learner(self.cfg, model_src)
        return learner, tokenizer, build.make_engine(self.cfg, learner.policy, tokenizer)

    @property
    def data_pos(self) -> int:
        return self.cursor.pos

    def save(self) -> Path:
        state = {"step": self.step, "data_pos": self.cursor.pos, "config": self.cfg.model_dump(mode="json"),
                 **self.counts.state()}  # fmt: skip
        payload = {**self.learner.checkpoint_parts(), "rng": ckpt.rng_state(), "trainer_state": state}
        keep = self.cfg.trainer.keep_checkpoints
        return ckpt.save_checkpoint(
            self.ckpt_root, self.step, self.learner.policy, self.tokenizer, payload, keep
        )

    # ------------------------------------------------------------------ rollout and reward
    def _sample(self, rows: list[dict], seed: int, timings: dict) -> list[Trajectory]:
        """`group_size` unscored samples per row (the Ray driver samples on its rollout workers)."""
        G, params = self.cfg.algo.group_size, build.sampling_params(self.cfg, seed)
        repeated = [row for row in rows for _ in range(G)]
        return sample_rows(
            self.task, self.engine, self.sandbox, repeated, self.tool_cfg, params, timings, self.tool
        )

    def _rollout(self, rows: list[dict], seed: int, timings: dict) -> list[Trajectory]:
        """`group_size` samples per row, scored by the task (0 for excluded trajectories)."""
        trajs = self._sample(rows, seed, timings)
        steps.score_groups(
            trajs, self.score(trajs), self.cfg.algo.group_size, self.cfg.rollout.void_turn_filter
        )
        return trajs

    def score(self, trajs: list[Trajectory]) -> list[float]:
        """Outcome rewards, in this process (the Ray driver grades in a process pool)."""
        return [0.0 if tr.excluded else self.task.score(tr) for tr in trajs]

    def round_seed(self, step: int, rnd: int) -> int:
        """The sampling seed of a step's `rnd`-th batch of prompts."""
        return self.cfg.trainer.seed * 1_000_003 + step * 101 + rnd

    def collect(self, step: int, timings: dict) -> tuple[list[Trajectory], list[Trajectory], dict]:
        """Sample a step's groups, then filter them. Returns (kept, all sampled, filter stats)."""
        a, t = self.cfg.algo, self.cfg.trainer
        filt = GROUP_FILTERS[a.filter]
        kept: list[Trajectory] = []
        sampled: list[Trajectory] = []
        groups_total = 0
        for rnd in range(1 + (a.max_resample_rounds if filt.refill else 0)):
            need = t.prompts_per_step - len(kept) // a.group_size if filt.refill else t.prompts_per_step
            if need <= 0:
                break
            rows = self.cursor.take(need)
            trajs = self._rollout(rows, seed=self.round_seed(step, rnd), timings=timings)
            sampled += trajs
            groups_total += len(rows)
            kept += steps.keep_groups(trajs, a, room=need if filt.refill else len(rows))
        groups_kept = len(kept) // a.group_size
        stats = {
            "filter/kept_groups_ratio": groups_kept / max(1, groups_total),
            "filter/groups_sampled": groups_total,
        }
        return kept, sampled, stats

    # ------------------------------------------------------------------ advantages and update
    def advantages(self, lb: LearnerBatch) -> Advantages:
        return steps.compute_advantages(self.cfg.algo, lb)

    def update(self, trajs: list[Trajectory]) -> dict[str, float]:
        mode = self.cfg.algo.recompute_logprobs
        recompute = mode == "always" or (mode == "auto" and not capabilities_of(self.engine).exact_logprobs)
        with steps.engine_asleep(self.engine):  # its memory goes to the update meanwhile, where it can sleep
            lb = self.learner.prepare(trajs, recompute=recompute)
            adv = self.advantages(lb)
            metrics = self.learner.train_on_batch(lb, adv)
        tokens = {"advantages": adv.advantages, "trainer_logprobs": self.learner.last_train_logprobs}
        self._update_tokens = tokens
        metrics["time/weight_sync_s"] = self._sync_engine()
        return metrics

    def _sync_engine(self) -> float:
        """Give the engine the learner's weights and version (a no-op copy when they share the module)."""
        t0 = time.perf_counter()
        self.engine.load_weights(self.learner.state_dict(), self.learner.version)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        version = self.learner.version  # the weights that sample this step
        kept, sampled, fstats = self.collect(self.step, timings)
        t_roll = time.perf_counter() - t0
        steps.check_sandbox_failures(self.cfg, self.step, sampled)
        metrics = {**rollout_metrics(sampled), **fstats, "rollout/policy_version": version}
        t1 = time.perf_counter()
        self._update_tokens = {}
        if kept:
            steps.apply_overlong(kept, self.cfg.algo, self.cfg.rollout.max_response_len)
            metrics.update(self.update(kept))
        metrics.update(
            self.counts.record(self.step, bool(kept), self.cfg.algo, fstats["filter/groups_sampled"])
        )
        t_train = time.perf_counter() - t1
        metrics.update(
            steps.time_metrics(timings, t_roll, t_train, time.perf_counter() - t0, sampled, self.cursor.pos)
        )
        self.samples.record_step(self.step, sampled, kept, policy_version=version, **self._update_tokens)
        return metrics

    def evaluate(
        self, max_tool_calls: int | None = None, desc: str | None = None, score: BatchScore | None = None
    ) -> dict[str, float]:
        """Held-out metrics under the training protocol; `desc` shows a progress bar with that label;
        `score` grades batches instead of the task (see `evaluate_rows`)."""
        return steps.held_out_metrics(self.cfg, self.engine, self.sandbox, self.eval_rows, self.task, self.tool,
                                max_tool_calls, desc, score)  # fmt: skip

    # ------------------------------------------------------------------ the loop
    def _on_signal(self, signum, _frame) -> None:
        self._stop_requested = True  # first: whatever happens to the terminal, the loop stops and saves
        console.notice(f"zerotir: signal {signum}: finishing the current step, then saving a checkpoint")

    def fit(self) -> dict[str, float]:
        t = self.cfg.trainer
        last: dict[str, float] = {}
        with console.stop_signals(self._on_signal):
            bar = console.progress(total=t.total_steps, initial=self.step, desc=self.cfg.name,
                                   disable=not self.cfg.log.progress)  # fmt: skip
            while self.step < t.total_steps and not self._stop_requested:
                metrics = self.train_step()
                if t.eval_every and (self.step + 1) % t.eval_every == 0:
                    metrics.update(self.evaluate())
                self.logger.log(self.step, metrics)
                last = metrics
                self.step += 1
                bar.set_postfix(acc=f"{metrics.get('reward/accuracy', 0):.2f}",
                                code=f"{metrics.get('rollout/code_ratio', 0):.2f}", refresh=False)  # fmt: skip
                bar.update(1)  # one refresh per step (one line per step in a log file)
                if t.save_every and self.step % t.save_every == 0 and self.step < t.total_steps:
                    self.save()
            bar.close()
            self.counts.summarise(self.cfg, self.step)
            path = self.save()
            if self._stop_requested:
                raise TrainingInterrupted(self.step, path)
        return last

    def close(self) -> None:
        self.logger.close()
        if self.sandbox is not None:
            self.sandbox.close()


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    reward_fn: RewardFn | None = None,
    trainer_cls: type[Trainer] = Trainer,
) -> Trainer:
    """Build, fit and close a trainer (`trainer_cls`: the distributed driver subclasses `Trainer`)."""
    trainer = trainer_cls(cfg, run_dir, resume=resume, reward_fn=reward_fn)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer


__all__ = ["Trainer", "train", "SandboxFailureAbort", "TrainingInterrupted"]
