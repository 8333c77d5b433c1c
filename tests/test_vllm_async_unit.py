"""The async vLLM engine's scheduling and accounting without vLLM: `_interactive` (one coroutine per
trajectory) over a fake request function, and `EngineWork`'s per-call differences."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from test_rollout import TOK, TapeEngine, prompts
from zerotir.rollout import ToolLoopConfig, run_tool_rollout, vllm_async
from zerotir.rollout.engine import EngineCapabilities, SamplingParams
from zerotir.rollout.vllm_stats import EngineWork


class FakeEngine:
    """`_stream` answers at once (row 1's first request a few loop turns later): a first segment
    writes a fence (token 7), a resumed one ends with EOS (token 8)."""

    max_model_len = 1000
    stop_ids = {8}

    def __init__(self):
        self.requests: list[tuple[int, int]] = []  # (row, prompt length)
        self.work = EngineWork()

    def _piece(self, t):
        return "```" if t == 7 else "x"

    def _tag(self, row, n):
        pass

    async def _stream(self, ids, params, budget, seed, cause):
        row = ids[0]
        self.requests.append((row, len(ids)))
        for _ in range(1 + 20 * (row == 1 and len(ids) == 1)):
            await asyncio.sleep(0)
        if len(ids) == 1:
            yield [7], [-0.5], None
        else:
            yield [8], [-0.25], "eos"


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
            vllm_async._interactive(eng, [[0], [1]], SamplingParams(), [10, 10], driver), timeout=10
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


class StreamTape:
    """The async engine's request stream over one fixed model text (byte tokens): like a sampler
    it writes on past any stop until the request is closed, `delta` tokens per delta (vLLM merges
    deltas a slow consumer has not read). The tape advances by the tokens the row kept (`_tag`)."""

    capabilities = EngineCapabilities(interactive=True)
    max_model_len = 10_000

    def __init__(self, script: str, delta: int = 4):
        self.tokenizer, self.delta = TOK, delta
        self.tape = TOK.encode(script, add_special_tokens=False) + [TOK.eos_token_id]
        self.stop_ids = {TOK.eos_token_id}
        self.work = EngineWork()
        self.pos = 0
        self.causes: list[str] = []
        self.delivered = 0
        self.closed_early = 0

    def load_weights(self, sd, version=0):
        pass

    def _piece(self, t):
        return TOK.decode([t])

    def _tag(self, row, n):
        self.pos += n

    async def _stream(self, ids, params, budget, seed, cause):
        self.causes.append(cause)
        toks = self.tape[self.pos : self.pos + budget]
        done = False
        try:
            for k in range(0, len(toks), self.delta):
                chunk = toks[k : k + self.delta]
                self.delivered += len(chunk)
                last = k + self.delta >= len(toks)
                end = None if not last else ("eos" if chunk[-1] == TOK.eos_token_id else "length")
                yield chunk, [-0.1] * len(chunk), end
            done = True
        finally:
            self.closed_early += not done

    def generate_interactive(self, prompts, params, budgets, driver):
        asyncio.run(vllm_async._interactive(self, prompts, params, budgets, driver))


def test_streamed_stops_one_request_per_segment_token_exact(local_sandbox):
    """The opening fence only switches the row's stops (the same request goes on), a backtick run
    that does not close the call is not a close, and the call's closing fence ends the request:
    it is aborted there and what was sampled past it is dropped and counted. The trajectory equals
    the one from an engine that stops at each stop string and is re-submitted (TapeEngine, rounds)."""
    script = 'Compute.\n```python3\ns = "a```b"\nprint(s)\n```\nThe answer is \\boxed{1}.'
    ps, t = prompts(1)
    cfg = ToolLoopConfig(max_tool_calls=2, max_response_len=400)
    eng = StreamTape(script, delta=5)  # the closing fence's token is not a delta's last
    ours = run_tool_rollout(eng, local_sandbox, ps, t, cfg, SamplingParams(seed=0))[0]
    ref = run_tool_rollout(TapeEngine(script), local_sandbox, ps, t, replace(cfg, scheduler="rounds"),
                           SamplingParams(seed=0))[0]  # fmt: skip
    assert [c.stdout for c in ours.tool_calls] == ["a```b\n"]
    assert ours.response_ids == ref.response_ids and ours.action_mask == ref.action_mask
    assert ours.rollout_logprobs == ref.rollout_logprobs and ours.finish_reason == ref.finish_reason == "stop"
    assert eng.causes == ["prompt", "output"]  # one request per model segment
    assert eng.closed_early == 1  # the first request was aborted at the closing fence
    kept = sum(ours.action_mask)
    assert eng.pos == kept  # only kept tokens were tagged
    assert eng.work.discarded == eng.delivered - kept > 0


def test_stop_switch_generate_runs_one_request(local_sandbox):
    """`generate(..., stop_switch=)` (the rounds scheduler's) goes through the same rows: the
    opening fence switches the stops inside one request, which ends at the closing fence."""
    script = "Compute.\n```python\nprint(6*7)\n```\nDone."
    eng = StreamTape(script, delta=3)
    ps, _ = prompts(1)
    c = vllm_async.AsyncVLLMEngine.generate(
        eng, ps, SamplingParams(), [["```py"]], [100], stop_switch={"```py": ["```"]}
    )[0]
    assert TOK.decode(c.token_ids) == "Compute.\n```python\nprint(6*7)\n```"
    assert (c.finish_reason, c.stop_str) == ("stop", "```")
    assert eng.causes == ["prompt"] and eng.closed_early == 1
