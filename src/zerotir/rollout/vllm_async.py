"""Asynchronous multi-turn rollouts on vLLM's `AsyncLLM`: one coroutine per trajectory.

The tool loop's state machine is unchanged (`tool_loop._ToolDriver`, the same `Interaction` the HF
engine's one decode loop drives): this engine implements `generate_interactive` with one coroutine
per row. A row generates to its next stop; when it closes a code block the driver submits the code
to the sandbox and the row waits for the observation while every other row keeps generating, since
vLLM batches whatever requests are live (continuous batching), not rounds. When the output is ready
the row re-submits prompt + response so far; prefix caching makes that a prefill of the new tokens
(and of the last, partial KV block) only. Sandbox concurrency is bounded by the sandbox itself (the
pool's slots queue submissions).

Stops are matched here, on the streamed tokens (`StopScan`, the HF engine's matcher), not by vLLM:
the closing fence "```" is a prefix of the opening one, so vLLM's fixed per-request stop strings
would end the request at the opening fence and the row would re-submit just to switch them. Here
the opening fence switches the row's stops and the same request goes on; at the token that closes
the call (or makes a template stop) the request is aborted and anything sampled past it dropped
(`EngineWork.discarded`). One request per model segment, the tokens kept exactly the HF engine's.

Partial rollouts: `sync_weights` may be called from another thread while a rollout is in flight. It
pauses generation (in-flight requests kept), reloads the weights, resets the prefix cache (kept
requests are preempted and recompute their prefix under the new weights) and resumes. Each row's
sampled tokens are tagged with the policy version that produced them (`segment_versions`).

The event loop runs in a background thread owned by the engine, so the synchronous trainer and the
tool loop call it like any other engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator

from zerotir.rollout.engine import (
    Completion,
    EngineCapabilities,
    Interaction,
    SamplingParams,
    StopDriver,
    StopScan,
    derive_seed,
)
from zerotir.rollout.vllm_engine import (
    VLLMEngineBase,
    clamp_budget,
    request_params,
    sampled_logprobs,
    to_completion,
)
from zerotir.rollout.vllm_stats import EngineWork, work_logger_factory
from zerotir.rollout.vllm_sync import (
    SyncStats,
    prepare_state_dict,
    remove_shm_checkpoint,
    write_shm_checkpoint,
)

_POLL_S = 0.002
"""How often waiting rows ask the driver for finished executions (the driver's futures are
thread-pool futures; polling them from the loop keeps every driver call on one thread)."""


class AsyncVLLMEngine(VLLMEngineBase):
    capabilities = EngineCapabilities(interactive=True, stop_switch=True, exact_logprobs=False)
    """One coroutine per trajectory behind `generate_interactive` (the tool loop's one-loop seam);
    `generate(..., stop_switch=)` goes through the same per-row requests (the rounds scheduler then
    takes one round per code block, not two)."""

    def _start(self, model: str, kwargs: dict) -> int:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="zerotir-vllm-async", daemon=True)
        self._thread.start()
        self._ids = itertools.count()
        self._pieces: dict[int, str] = {}
        self.segment_versions: list[list[tuple[int | None, int]]] = []
        """Per row of the last call: (policy version, sampled tokens) runs, in order."""
        self.work = EngineWork()
        """What the engine core computed (steps, batch sizes, prefilled tokens): see `vllm_stats`."""
        args = AsyncEngineArgs(model=model, **kwargs)

        async def build():
            return AsyncLLM.from_engine_args(args, stat_loggers=[work_logger_factory(self.work)])

        try:
            self.llm = self._run(build())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise
        return int(self.llm.model_config.max_model_len)

    def _run(self, coro):
        if threading.current_thread() is self._thread:
            raise RuntimeError("AsyncVLLMEngine methods must not be called from its own event loop")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # ------------------------------------------------------------------ one request
    async def _request(
        self, row: int, ids: list[int], params, stops, budget: int, seed, cause: str = "prompt"
    ) -> Completion:
        """One request with vLLM's own stop strings, streamed in deltas so that each token is tagged
        with the version it came from. `cause` (why it was submitted) only labels its prefill in
        `self.work`."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sp = request_params(params, stops, budget, seed, self.stop_ids, output_kind=RequestOutputKind.DELTA)
        toks: list[int] = []
        lps: list[float] = []
        last = None
        self.work.requests += 1
        async for out in self.llm.generate(TokensPrompt(prompt_token_ids=ids), sp, f"zt-{next(self._ids)}"):
            if last is None:
                self.work.add_request(cause, len(ids), out.num_cached_tokens or 0)
            last = out.outputs[0]
            toks += last.token_ids
            lps += sampled_logprobs(last)
            self._tag(row, len(last.token_ids))
        if last is None:
            raise RuntimeError("vLLM returned no output for a request")
        return to_completion(toks, lps, last.finish_reason, last.stop_reason)

    async def _stream(
        self, ids: list[int], params, budget: int, seed, cause: str
    ) -> AsyncIterator[tuple[list[int], list[float], str | None]]:
        """One request without stop strings (EOS and end-of-turn ids aside) and without detokenizing:
        (new token ids, their logprobs, None or the finish reason "eos" | "length") per delta. The
        caller matches stops on the tokens (`_segment`); closing this generator early aborts the
        request in vLLM's engine core (`aclosing`: at once, not when it is garbage collected)."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sp = request_params(
            params, [], budget, seed, self.stop_ids, output_kind=RequestOutputKind.DELTA, detokenize=False
        )
        self.work.requests += 1
        first = True
        gen = self.llm.generate(TokensPrompt(prompt_token_ids=ids), sp, f"zt-{next(self._ids)}")
        async with contextlib.aclosing(gen):
            async for out in gen:
                if first:
                    self.work.add_request(cause, len(ids), out.num_cached_tokens or 0)
                    first = False
                o = out.outputs[0]
                end = None
                if out.finished:
                    end = to_completion([], [], o.finish_reason, o.stop_reason).finish_reason
                yield list(o.token_ids), sampled_logprobs(o), end

    def _piece(self, token: int) -> str:
        """A token's decoded text (cached), for `StopScan`: the HF engine's pieces exactly."""
        s = self._pieces.get(token)
        if s is None:
            s = self._pieces[token] = self.tokenizer.decode([token])
        return s

    def _tag(self, row: int, n: int) -> None:
        if n == 0 or row >= len(self.segment_versions):
            return
        seg = self.segment_versions[row]
        if seg and seg[-1][0] == self.weight_version:
            seg[-1] = (self.weight_version, seg[-1][1] + n)
        else:
            seg.append((self.weight_version, n))

    # ------------------------------------------------------------------ Engine protocol
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        stops: list[list[str]],
        max_tokens: list[int] | None = None,
        stop_switch: dict[str, list[str]] | None = None,
    ) -> list[Completion]:
        """All prompts as concurrent requests; returns when every one is done (a lock-step round).
        `stop_switch` (as in the HF engine): a row that hits a stop string that is a key there goes on
        in the same request with the mapped stops; then the stops are matched here on the streamed
        tokens (`_segment`), since a vLLM request's stop strings are fixed."""
        budgets = max_tokens or [params.max_new_tokens] * len(prompts)
        if stop_switch:
            driver = StopDriver(stops, stop_switch)
            self.generate_interactive(prompts, params, list(budgets), driver)
            return driver.completions()
        self.segment_versions = [[] for _ in prompts]

        async def one(i: int) -> Completion:
            b = clamp_budget(budgets[i], len(prompts[i]), self.max_model_len)
            if b <= 0:
                return Completion([], [], "length")
            seed = derive_seed(params.seed, i)
            return await self._request(i, prompts[i], params, stops[i], b, seed)

        async def all_():
            return list(await asyncio.gather(*(one(i) for i in range(len(prompts)))))

        return self._run(all_())

    def generate_interactive(
        self, prompts: list[list[int]], params: SamplingParams, budgets: list[int], driver: Interaction
    ) -> None:
        """A whole multi-turn rollout, one coroutine per row (see the module docstring). `budgets` cap
        sampled plus fed tokens per row, as in the HF engine."""
        self.segment_versions = [[] for _ in prompts]
        self._run(_interactive(self, prompts, params, list(budgets), driver))

    # ------------------------------------------------------------------ weights
    def _sync(self, state_dict: dict, version: int) -> SyncStats:
        """Also while a rollout runs in another thread (a partial rollout: its requests are paused,
        kept, and continue under the new version)."""
        t0 = time.perf_counter()
        tensors = prepare_state_dict(state_dict, self.dtype)
        d = write_shm_checkpoint(tensors, version)  # AsyncLLM's engine core is always another process

        async def swap():
            await self.llm.pause_generation(mode="keep", clear_cache=False)
            try:
                await self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(d)})
                if not await self.llm.reset_prefix_cache(reset_running_requests=True):
                    raise RuntimeError("vLLM refused to reset its prefix cache after a weight sync")
                await self.llm.update_weight_version(str(version))
                self.weight_version = version  # set on the loop thread: later deltas get the new tag
            finally:
                await self.llm.resume_generation()

        try:
            self._run(swap())
        finally:
            remove_shm_checkpoint(d)
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        return SyncStats(version, time.perf_counter() - t0, nbytes, "shm_file")

    def _sleep(self, level: int) -> None:
        self._run(self.llm.sleep(level=level))

    def _wake_up(self) -> None:
        self._run(self.llm.wake_up())

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def stop():
            self.llm.shutdown()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self._run(stop())
        self.llm = None  # collected now, not at interpreter exit (its __del__ shuts down again)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


async def _segment(
    eng, i: int, ids: list[int], params, budget: int, seed, cause: str, driver, scan
) -> tuple[str, list[int]]:
    """One vLLM request of row `i`: its tokens go to the driver event by event, the stops matched
    here (`scan`, the HF engine's matcher) so that an opening fence only switches the stops and the
    same request goes on. Returns ("pause" | "finish" | "end", the token ids kept). At a pause or finish the
    request is aborted at the token that made the stop; tokens already sampled past it are dropped
    (`eng.work.discarded`), so the row holds exactly what the HF engine would have sampled."""
    seg_ids: list[int] = []
    seg_lps: list[float] = []
    kept: list[int] = []
    ended = False
    ends = () if params.ignore_eos else eng.stop_ids
    stream = eng._stream(ids, params, budget, seed, cause)
    async with contextlib.aclosing(stream):
        async for toks, lps, end in stream:
            for j, (t, lp) in enumerate(zip(toks, lps, strict=True)):
                seg_ids.append(t)
                seg_lps.append(lp)
                kept.append(t)
                eng._tag(i, 1)
                hit = None if t in ends else scan.feed(t)  # an end token is the request's last
                if hit is None:
                    continue
                action = driver.on_stop(i, hit, seg_ids, seg_lps)
                seg_ids, seg_lps = [], []
                if action == "continue":
                    scan.reset(driver.stops(i))
                    continue
                eng.work.discarded += len(toks) - j - 1
                return action, kept  # leaving `aclosing` aborts the request
            if end is not None:  # the last delta: the stream then ends by itself (no abort)
                driver.on_end(i, end, seg_ids, seg_lps)
                ended = True
    if not ended:
        raise RuntimeError("vLLM's request stream ended without a finish reason")
    return "end", kept


async def _interactive(eng: AsyncVLLMEngine, prompts, params, budgets, driver) -> None:
    waiting: dict[int, asyncio.Future] = {}
    live = len(prompts)
    wake = asyncio.Event()

    def deliver() -> None:
        # Hands finished executions to their rows.
        for i, more in driver.poll(block=False).items():
            fut = waiting.pop(i, None)
            if fut is not None and not fut.done():
                fut.set_result(more)

    async def poller():
        # Runs while any row lives.
        while live:
            if waiting:
                deliver()
            await asyncio.sleep(_POLL_S) if waiting else await _wait_event(wake)

    async def row(i: int) -> None:
        """A request per model segment: the first from the prompt, then one after each execution
        (prompt + response so far + the output; the prefix cache holds all but the last block)."""
        ids, remaining, seg, cause = list(prompts[i]), budgets[i], 0, "prompt"
        scan = StopScan(eng._piece, driver.stops(i))
        while True:
            room = clamp_budget(remaining, len(ids), eng.max_model_len)
            if room <= 0:
                driver.on_end(i, "length", [], [])
                return
            seed = derive_seed(params.seed, i, seg)
            action, kept = await _segment(eng, i, ids, params, room, seed, cause, driver, scan)
            seg += 1
            if action != "pause":
                return
            ids += kept
            remaining -= len(kept)
            fut = asyncio.get_running_loop().create_future()
            waiting[i] = fut
            deliver()  # an execution that is already done resumes now, not a poll later
            if not fut.done():
                wake.set()
            more = await fut
            if more is None:
                return
            ids += more
            remaining -= len(more)
            cause = "output"
            scan.reset(driver.stops(i))

    async def tracked(i: int) -> None:
        nonlocal live
        try:
            await row(i)
        finally:
            live -= 1
            wake.set()

    poll_task = asyncio.ensure_future(poller())
    try:
        await asyncio.gather(*(tracked(i) for i in range(len(prompts))))
    finally:
        live = 0
        if not poll_task.done():
            poll_task.cancel()  # it may be asleep for `_POLL_S`: the rollout is over now
        with contextlib.suppress(asyncio.CancelledError):
            await poll_task  # re-raises what the driver's `poll` raised


async def _wait_event(ev: asyncio.Event) -> None:
    await ev.wait()
    ev.clear()


def attach_versions(trajs, engine: AsyncVLLMEngine) -> None:
    """Record on each trajectory of the engine's last call the policy version of each run of its
    model tokens: `meta["policy_versions"] = [(version, n_tokens), ...]` in sampling order (version
    None: the checkpoint the engine was built from)."""
    if len(trajs) != len(engine.segment_versions):
        raise ValueError(
            f"{len(trajs)} trajectories for {len(engine.segment_versions)} rows of the last call"
        )
    for tr, seg in zip(trajs, engine.segment_versions):
        tr.meta["policy_versions"] = list(seg)
