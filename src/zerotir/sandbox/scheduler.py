"""Admission and fair dispatch for the HTTP server: who gets the pool's next free slot.

`Admission` is the honest queue bound: executions are counted when a request is accepted (before
anything is awaited), so concurrent batches cannot all pass the check and exceed it together.
`FairScheduler` lets at most `capacity` executions into the pool at once; the others wait in one
FIFO queue per client, served round-robin, so a client's large batch delays another client's call
by at most one execution per client ahead of it, not by the whole batch. Both live on the server's
event loop (no locks: only the loop's thread touches them).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque

__all__ = ["Admission", "FairScheduler", "QueueDeadlineError"]


class QueueDeadlineError(RuntimeError):
    """An execution waited for a pool slot longer than the server's queue deadline."""


class Admission:
    """At most `limit` executions accepted and not yet finished."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0

    def try_take(self, n: int) -> bool:
        if self.count + n > self.limit:
            return False
        self.count += n
        return True

    def give_back(self, n: int = 1) -> None:
        self.count -= n


class FairScheduler:
    def __init__(self, capacity: int, queue_deadline_s: float | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.queue_deadline_s = queue_deadline_s
        self.running = 0
        self._queues: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(1 for q in self._queues.values() for f in q if not f.done())

    async def acquire(self, client: str) -> None:
        """Wait for a slot (raises QueueDeadlineError past the deadline); pair with `release`."""
        if self.running < self.capacity and not self._queues:
            self.running += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._queues.setdefault(client, deque()).append(fut)
        try:
            await asyncio.wait_for(fut, self.queue_deadline_s)
        except asyncio.TimeoutError:
            raise QueueDeadlineError(
                f"waited over {self.queue_deadline_s} s for a sandbox slot (server saturated)"
            ) from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just as the caller went away: pass it on
            raise

    def release(self) -> None:
        self.running -= 1
        while self._queues and self.running < self.capacity:
            client, q = self._queues.popitem(last=False)
            while q and q[0].done():  # timed out or cancelled waiters
                q.popleft()
            if not q:
                continue
            q.popleft().set_result(None)
            self.running += 1
            if any(not f.done() for f in q):
                self._queues[client] = q  # to the back: the other clients go first
