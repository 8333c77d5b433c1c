"""The training loop on Ray: rollout workers and a learner as actors, the orchestrator as the driver.

Needs the `ray` extra (`pip install zerotir[ray]`); nothing outside this package imports Ray. Entry
point: `zerotir train ... distributed.enabled=true` (see docs/guides/ray.md), or `train` below.
"""

from __future__ import annotations


def train(cfg, run_dir, resume: bool = False, reward_fn=None):
    from zerotir.distributed.driver import train as _train

    return _train(cfg, run_dir, resume=resume, reward_fn=reward_fn)


__all__ = ["train"]
