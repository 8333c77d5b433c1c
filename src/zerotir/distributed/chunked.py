"""Partial rollouts by chunked decoding: an `Engine` wrapper that decodes at most `chunk` tokens per
call and, between chunks, asks the worker for newer weights, so a weight update never waits for an
in-flight trajectory and the trajectory goes on with the new policy.

Why chunks and not the HF engine's one-loop decoding: a weight swap inside that loop would race the
forward pass and leave no record of which tokens came from which weights. Between chunks the swap
is clean (the next chunk re-prefills with the new weights, so no stale KV cache is reused) and each
chunk's tokens are tagged with the version that sampled them (`VersionedSegments`). The tool loop
runs in rounds on top (the wrapper states no one-loop capability), so tool-call boundaries are
chunk boundaries too. A stop string that straddles two chunks is found and cut where it completes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from zerotir.rollout.engine import Completion, Engine, EngineCapabilities, SamplingParams, capabilities_of
from zerotir.rollout.tool_loop import engine_window
from zerotir.types import CompletionReason, Trajectory


class VersionedSegments:
    """Which policy version sampled each model token, logged per engine call and read back per
    trajectory as run-length segments [(version, n_model_tokens), ...]."""

    def __init__(self, start_version: int) -> None:
        self.start_version = start_version
        self._calls: dict[tuple[int, ...], list[int]] = {}

    def record(self, prompt: list[int], versions: list[int]) -> None:
        self._calls[tuple(prompt)] = versions

    def of(self, tr: Trajectory) -> list[tuple[int, int]]:
        if not self._calls:
            return [(self.start_version, tr.model_tokens)] if tr.model_tokens else []
        seq, P = tr.prompt_ids + tr.response_ids, len(tr.prompt_ids)
        per_token: list[int] = []
        i = 0
        while i < len(tr.response_ids):
            if not tr.action_mask[i]:
                i += 1
                continue
            vs = self._calls.get(tuple(seq[: P + i]))
            if not vs:  # not generated through this log (cannot happen with the tool loop)
                vs = [self.start_version]
            n = min(len(vs), len(tr.response_ids) - i)
            per_token += vs[:n]
            i += n
        out: list[tuple[int, int]] = []
        for v in per_token:
            if out and out[-1][0] == v:
                out[-1] = (v, out[-1][1] + 1)
            else:
                out.append((v, 1))
        return out


class ChunkedEngine:
    def __init__(self, inner: Engine, chunk: int, refresh: Callable[[], int]) -> None:
        """`refresh()` loads the newest weights the worker holds and returns their version."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 (got {chunk})")
        self.inner, self.chunk, self.refresh = inner, chunk, refresh
        self.tokenizer: Any = inner.tokenizer
        self.capabilities = EngineCapabilities(exact_logprobs=capabilities_of(inner).exact_logprobs)
        # The inner engine's window, for the tool loop's per-turn budget: without it, partial rollouts
        # capped only the response, and prompt + response could outgrow the model's context.
        self.max_model_len = engine_window(inner)
        self.log = VersionedSegments(0)

    def load_weights(self, state_dict: dict, version: int) -> None:
        self.inner.load_weights(state_dict, version)

    def _straddle(self, before: list[int], new: list[int], stops: list[str]) -> tuple[int, str] | None:
        """(tokens of `new` to keep, stop) when a stop string starts in `before` and ends in `new`."""
        if not before or not stops:
            return None
        longest = max(len(s) for s in stops)
        tail = before[-longest:]
        head = self.tokenizer.decode(tail)
        for j in range(1, min(len(new), longest) + 1):
            text = self.tokenizer.decode(tail + new[:j])
            for s in stops:
                if s in text and s not in head:
                    return j, s
        return None

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        stops: list[list[str]],
        max_tokens: list[int] | None = None,
    ) -> list[Completion]:
        n = len(prompts)
        budgets = list(max_tokens) if max_tokens is not None else [params.max_new_tokens] * n
        ids: list[list[int]] = [[] for _ in range(n)]
        lps: list[list[float]] = [[] for _ in range(n)]
        vers: list[list[int]] = [[] for _ in range(n)]
        done: list[Completion | None] = [None] * n
        k = 0
        while True:
            live = [i for i in range(n) if done[i] is None]
            if not live:
                break
            version = self.refresh()
            sp = params if params.seed is None else replace(params, seed=params.seed + 104_729 * k)
            k += 1
            comps = self.inner.generate(
                [prompts[i] + ids[i] for i in live], sp, [stops[i] for i in live],
                [min(self.chunk, budgets[i] - len(ids[i])) for i in live],
            )  # fmt: skip
            for i, c in zip(live, comps):
                new, new_lp, reason, stop = c.token_ids, c.logprobs, c.finish_reason, c.stop_str
                cut = self._straddle(ids[i], new, stops[i])
                if cut is not None:
                    new, new_lp, reason, stop = new[: cut[0]], new_lp[: cut[0]], CompletionReason.STOP, cut[1]
                ids[i] += new
                lps[i] += new_lp
                vers[i] += [version] * len(new)
                if reason != CompletionReason.LENGTH or len(ids[i]) >= budgets[i] or not new:
                    done[i] = Completion(ids[i], lps[i], reason, stop)
        for p, v in zip(prompts, vers):
            self.log.record(p, v)
        return [c for c in done if c is not None]
