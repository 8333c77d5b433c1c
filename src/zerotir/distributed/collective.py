"""The driver's side of `distributed.weight_transport=collective`: who is in the weight group, when it
is (re)built, and one broadcast as a set of Ray calls (the tensors never pass through the driver or
the object store; distributed/transport.py moves them).

Membership: learner rank 0 (rank 0 of the group) and rollout worker i (rank i + 1). A broadcast is
one `broadcast_weights` call on every learner rank (sharded learners gather the full state dict
together; rank 0 sends) and one `receive_weights(generation, seq)` per worker; the calls are
numbered so that a worker's receives run in the order they were sent.

Restarts: a replaced rollout worker cannot join a running group (its size and members are fixed when
it is made), so `RolloutPool._replace` rebuilds it: the last broadcast is let finish or fail, every
member leaves the old group and joins a new one (a new store on a new port, generation + 1), and the
newest weights are broadcast once more over it, which is the replacement's first sync (the live
workers receive a copy of what they hold and keep their version).
"""

from __future__ import annotations

import ray

from zerotir.config import RunConfig
from zerotir.distributed.transport import pick_backend


class CollectiveBroadcast:
    def __init__(self, cfg: RunConfig, learners: list):
        d = cfg.distributed
        self.learners = learners
        self.backend = pick_backend(d.learner_gpus, d.rollout_gpus, cfg.trainer.device)
        self.timeout_s = d.weight_sync_timeout_s
        self.generation, self.seq = 0, 0
        self.inflight: list[ray.ObjectRef] = []

    def build(self, workers: list) -> None:
        """(Re)make the group over learner rank 0 and `workers`; returns when all have joined."""
        self.settle()
        self.generation += 1
        self.seq = 0
        host, port = ray.get(self.learners[0].weight_endpoint.remote())
        world = 1 + len(workers)
        refs = [self.learners[0].join_weight_group.remote(host, port, world, self.backend, self.timeout_s)]
        refs += [
            w.join_weight_group.remote(
                self.generation, host, port, world, i + 1, self.backend, self.timeout_s
            )
            for i, w in enumerate(workers)
        ]
        ray.get(refs, timeout=self.timeout_s)

    def broadcast(self, workers: list) -> list[ray.ObjectRef]:
        """Start one broadcast of the learner's current weights; the refs complete when every member
        is done (learner ranks first, then the workers in order)."""
        self.seq += 1
        refs = [a.broadcast_weights.remote() for a in self.learners]
        refs += [w.receive_weights.remote(self.generation, self.seq) for w in workers]
        self.inflight = refs
        return refs

    def settle(self) -> None:
        """Wait (at most the group timeout) for the last broadcast to end, failed or not."""
        if self.inflight:
            ray.wait(self.inflight, num_returns=len(self.inflight), timeout=self.timeout_s)
            self.inflight = []


__all__ = ["CollectiveBroadcast"]
