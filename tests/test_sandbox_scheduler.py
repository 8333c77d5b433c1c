"""The HTTP server's admission and fair dispatch, as pure asyncio (no pool, no processes)."""

import asyncio

import pytest

from zerotir.sandbox.scheduler import Admission, FairScheduler, QueueDeadlineError
from zerotir.sandbox.sessions import SessionError, SessionStore


def test_admission_reserves_whole_batches():
    a = Admission(10)
    assert a.try_take(6) and not a.try_take(5) and a.try_take(4)
    a.give_back(3)
    assert a.try_take(3) and not a.try_take(1)


def test_clients_take_turns():
    """One slot; client A queues three calls, then B and C one each: after A's running call the
    order is A, B, C, A, A (round-robin), not A, A, A, B, C (arrival)."""

    async def main():
        sched = FairScheduler(capacity=1)
        order: list[str] = []

        async def call(client: str, tag: str):
            await sched.acquire(client)
            order.append(tag)
            await asyncio.sleep(0)
            sched.release()

        await sched.acquire("A")  # the call already running
        tasks = [
            asyncio.ensure_future(call(c, t))
            for c, t in [("A", "a1"), ("A", "a2"), ("A", "a3"), ("B", "b1"), ("C", "c1")]
        ]
        await asyncio.sleep(0)
        sched.release()
        await asyncio.gather(*tasks)
        return order, sched.running

    order, running = asyncio.run(main())
    assert order == ["a1", "b1", "c1", "a2", "a3"] and running == 0


def test_queue_deadline_fails_the_waiter_and_keeps_the_slot_count():
    async def main():
        sched = FairScheduler(capacity=1, queue_deadline_s=0.05)
        await sched.acquire("A")
        with pytest.raises(QueueDeadlineError):
            await sched.acquire("B")
        sched.release()
        await sched.acquire("B")  # the timed-out waiter left no ghost behind
        return sched.running, sched.waiting

    assert asyncio.run(main()) == (1, 0)


def test_session_store_caps_and_expiry():
    store = SessionStore(max_sessions=2, max_blocks=1, max_bytes=10, ttl_s=100)
    a = store.create(now=0)
    store.create(now=0)
    with pytest.raises(SessionError) as e:
        store.create(now=50)
    assert e.value.status == 429
    store.create(now=150)  # both idle past the TTL: expired, room again
    with pytest.raises(SessionError) as e:
        store.get(a, now=150)
    assert e.value.status == 404
    s = store.get(store.create(now=150), now=151)
    with pytest.raises(SessionError):
        store.check_room(s, "x" * 11)
    store.record(s, "x = 1")
    with pytest.raises(SessionError) as e:
        store.check_room(s, "y = 2")
    assert e.value.status == 409
