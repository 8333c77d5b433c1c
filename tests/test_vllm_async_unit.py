"""The async vLLM engine's scheduling and accounting without vLLM: `_interactive` (one coroutine per
trajectory) over a fake request function, and `EngineWork`'s per-call differences."""

from __future__ import annotations

import asyncio

from zerotir.rollout import vllm_async
from zerotir.rollout.engine import Completion, SamplingParams
from zerotir.rollout.vllm_stats import EngineWork


class FakeEngine:
    """`_request` answers at once (row 1's first request a few loop turns later): a first segment
    stops at a fence, a resumed one ends with EOS."""

    max_model_len = 1000

    def __init__(self):
        self.requests: list[tuple[int, int]] = []  # (row, prompt length)

    async def _request(self, row, ids, params, stops, budget, seed, cause="prompt"):
        self.requests.append((row, len(ids)))
        for _ in range(1 + 20 * (row == 1 and len(ids) == 1)):
            await asyncio.sleep(0)
        if len(ids) == 1:
            return Completion([7], [-0.5], "stop", "```")
        return Completion([8], [-0.25], "eos")


class Driver:
    """Row 1's execution is done when submitted; row 0's (submitted first) is done from then on."""

    def __init__(self):
        self.pending: set[int] = set()
        self.ended: list[int] = []

    def stops(self, i):
        return ["```"]

    def on_stop(self, i, stop, token_ids, logprobs):
        self.pending.add(i)
        return "pause"

    def on_end(self, i, reason, token_ids, logprobs):
        self.ended.append(i)

    def poll(self, block):
        ready = self.pending if 1 in self.pending else set()
        self.pending = self.pending - ready
        return {i: [5, 5] for i in ready}


def test_a_done_execution_resumes_its_row_without_waiting_for_the_poller(monkeypatch):
    """Row 0 pauses and the poller, finding nothing ready, sleeps; then row 1 pauses with its result
    ready. Row 1 must resume at once (and hand row 0 its result), not after the poller's sleep
    (here an hour: before the fix the rollout hung for it)."""
    monkeypatch.setattr(vllm_async, "_POLL_S", 3600.0)
    eng, driver = FakeEngine(), Driver()

    async def main():
        await asyncio.wait_for(
            vllm_async._interactive(eng, [[1], [1]], SamplingParams(), [10, 10], driver), timeout=10
        )

    try:
        asyncio.run(main())
    except TimeoutError:
        raise AssertionError("a row whose execution was done waited for the poller's sleep") from None
    assert sorted(driver.ended) == [0, 1]
    assert sorted(eng.requests) == [(0, 1), (0, 4), (1, 1), (1, 4)]  # prompt + token + 2 fed ids


def test_engine_work_since_subtracts_a_snapshot():
    w = EngineWork(steps=5, running_sum=40, generated=40, prompt_computed=10, prompt_total=30)
    w.add_request("prompt", 20, 16)
    before = w.snapshot()
    w.steps, w.running_sum, w.generated = 9, 70, 70
    w.add_request("output", 30, 16)
    d = w.since(before).summary()
    assert (d["steps"], d["mean_batch"], d["generated"]) == (4, 7.5, 30)
    assert (d["output_requests"], d["output_prompt_tokens"], d["output_prefill_computed"]) == (1, 30, 14)
    assert "prompt_requests" not in d  # nothing submitted for that cause since the snapshot
    assert before.by_cause == {"prompt": [1, 20, 4]}  # the snapshot is not aliased
