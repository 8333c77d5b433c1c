"""The learner with its chosen off-policy correction: a thin wrapper around `train.learner.Learner`.

`prepare` recomputes the learner's logprobs when the correction needs them (the proximal policy);
`train_on_batch` picks the ratio's denominator, weights the advantages and masks tokens as
`algos.offpolicy.off_policy_correction` says, then runs the unchanged update. `on_policy` changes
nothing, so a synchronous run computes exactly what the single-process trainer does.
"""

from __future__ import annotations

from dataclasses import replace

from zerotir.algos.offpolicy import NEEDS_TRAINER_LOGPROBS, OffPolicy, off_policy_correction
from zerotir.train.learner import Advantages, Learner, LearnerBatch
from zerotir.types import Trajectory


class CorrectedLearner:
    def __init__(self, learner: Learner, method: OffPolicy | str, cap: float):
        self.inner, self.method, self.cap = learner, OffPolicy(method), cap

    def __getattr__(self, name: str):  # policy, version, state_dict, checkpoint parts: the learner's own
        return getattr(self.inner, name)

    def prepare(self, trajs: list[Trajectory], recompute: bool) -> LearnerBatch:
        return self.inner.prepare(trajs, recompute=recompute or self.method in NEEDS_TRAINER_LOGPROBS)

    def train_on_batch(self, lb: LearnerBatch, adv: Advantages) -> dict[str, float]:
        if self.method == OffPolicy.ON_POLICY:
            return self.inner.train_on_batch(lb, adv)
        tb = lb.tokens
        c = off_policy_correction(
            self.method, tb.rollout_logprobs, tb.recomputed_logprobs, tb.action_mask, self.cap
        )
        recomputed = None if c.old_logprobs is tb.rollout_logprobs else c.old_logprobs
        lb = replace(lb, tokens=replace(tb, action_mask=c.mask, recomputed_logprobs=recomputed))
        metrics = self.inner.train_on_batch(lb, replace(adv, advantages=adv.advantages * c.weights))
        return {**metrics, **c.metrics}
