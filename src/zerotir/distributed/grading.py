"""The driver's grader: outcome rewards computed in a `GradingPool` of spawned processes.

Grading runs sympy on model-written answers, which a few characters can keep busy for minutes inside
C code that no signal interrupts; math-verify's own timeouts are `signal.alarm`s that need a main
thread. In a pool each response is graded in a worker's main thread, and a worker that misses its
deadline is killed and replaced: the response scores 0 and the driver, which owns the whole
pipeline's progress, never stalls. A custom reward named in config (`rollout.reward:
module:function`) runs in the pool too; one passed as a Python object to `train(reward_fn=...)`
may not pickle, so it runs in the driver, as does everything with `distributed.grader_processes=0`.
"""

from __future__ import annotations

from functools import cache

from zerotir.config import RunConfig
from zerotir.reward.pool import GradingPool
from zerotir.reward.segments import grade_trajectories
from zerotir.reward.verify import math_reward
from zerotir.task import MathTask, RewardFn, load_reward
from zerotir.types import Trajectory


@cache
def _reward(path: str) -> RewardFn:
    return load_reward(path)


def call_reward(response: str, answer: str, *, reward: str, **_options) -> float:
    """A pool worker's `grade_fn` for a custom reward given by import path."""
    return float(_reward(reward)(response, answer))


class DriverGrader:
    def __init__(
        self,
        cfg: RunConfig,
        task: MathTask,
        reward_fn: RewardFn | None = None,
        pool: GradingPool | None = None,
    ):
        """`pool`: an existing pool to grade in (tests); else one is started from the config."""
        self.task, r = task, cfg.rollout
        self.custom = r.reward if reward_fn is None else None  # a path the workers can import
        in_process = cfg.distributed.grader_processes == 0 or (
            task.reward_fn is not None and self.custom is None
        )
        self.pool = pool
        if pool is None and not in_process:
            fn = call_reward if self.custom else math_reward
            self.pool = GradingPool(
                cfg.distributed.grader_processes, timeout_s=r.grader_timeout_s, grade_fn=fn
            )

    def score(self, trajs: list[Trajectory], grade_excluded: bool = False) -> list[float]:
        """Rewards in order: 0 for timed-out or crashed graders, and for excluded trajectories (a
        sandbox failure: not graded, they do not train) unless `grade_excluded`, as an evaluation
        grades them (the single-process `task.score` does)."""
        live = [k for k, tr in enumerate(trajs) if grade_excluded or not tr.excluded]
        out = [0.0] * len(trajs)
        if not live:
            return out
        todo = [trajs[k] for k in live]
        if self.pool is None:
            scores = [self.task.score(tr) for tr in todo]
        elif self.custom:
            scores = self.pool.grade([tr.text for tr in todo], [tr.answer for tr in todo], reward=self.custom)
        else:
            t = self.task
            scores = grade_trajectories(
                todo, [tr.answer for tr in todo], t.tokenizer, pool=self.pool,
                allow_printed_answers=t.allow_printed_answers, multi_box=t.multi_box,
            )  # fmt: skip
        for k, s in zip(live, scores):
            out[k] = float(s)
        return out

    def metrics(self) -> dict[str, float]:
        """Counts over the run (0 when grading in-process)."""
        st = self.pool.stats if self.pool is not None else None
        return {
            "distributed/grader_timeouts": float(st.timeouts if st else 0),
            "distributed/grader_crashes": float(st.crashes if st else 0),
        }

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
