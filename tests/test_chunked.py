"""Partial rollouts' chunked decoding (distributed/chunked.py) with a scripted engine: which version
sampled each token, stop strings that straddle a chunk boundary, budgets."""

import pytest

from zerotir.distributed.chunked import ChunkedEngine, VersionedSegments
from zerotir.rollout.engine import Completion, SamplingParams
from zerotir.types import Trajectory

pytestmark = pytest.mark.unit


class CharTok:
    """Token i is the character chr(i)."""

    def decode(self, ids):
        return "".join(map(chr, ids))


class Scripted:
    """Emits the characters of `text` in order, honouring stop strings and token budgets."""

    tokenizer = CharTok()

    def __init__(self, text: str):
        self.text, self.pos, self.calls = text, 0, []

    def generate(self, prompts, params, stops, max_tokens):
        out = []
        for _p, st, budget in zip(prompts, stops, max_tokens):
            self.calls.append(budget)
            ids: list[int] = []
            reason, hit = "length", None
            while len(ids) < budget and self.pos < len(self.text):
                ids.append(ord(self.text[self.pos]))
                self.pos += 1
                hit = next((s for s in st if CharTok().decode(ids).endswith(s)), None)
                if hit:
                    reason = "stop"
                    break
            if self.pos >= len(self.text) and not hit:
                reason = "eos"
            out.append(Completion(ids, [-0.5] * len(ids), reason, hit))
        return out


def test_versions_change_between_chunks_and_are_read_back_as_segments():
    versions = iter([3, 3, 4, 5])
    eng = ChunkedEngine(Scripted("abcdefghij"), chunk=3, refresh=lambda: next(versions))
    eng.log = VersionedSegments(3)
    (c,) = eng.generate([[1, 2]], SamplingParams(seed=0), [[]], [100])
    assert CharTok().decode(c.token_ids) == "abcdefghij" and c.finish_reason == "eos"
    assert eng.inner.calls == [3, 3, 3, 3]
    tr = Trajectory(prompt_ids=[1, 2], response_ids=c.token_ids, action_mask=[1] * 10)
    assert eng.log.of(tr) == [(3, 6), (4, 3), (5, 1)]


def test_a_stop_string_split_by_a_chunk_boundary_ends_the_completion_where_it_completes():
    eng = ChunkedEngine(Scripted("ab```python\nx"), chunk=4, refresh=lambda: 0)
    (c,) = eng.generate([[1]], SamplingParams(), [["```python"]], [100])
    assert CharTok().decode(c.token_ids) == "ab```python" and c.finish_reason == "stop"
    assert c.stop_str == "```python"


def test_the_budget_is_respected_and_segments_skip_injected_tokens():
    eng = ChunkedEngine(Scripted("abcdefgh"), chunk=3, refresh=lambda: 7)
    eng.log = VersionedSegments(7)
    (c,) = eng.generate([[9]], SamplingParams(), [[]], [5])
    assert len(c.token_ids) == 5 and c.finish_reason == "length"
    # the tool loop then injects 2 environment tokens and generates again from the longer prefix
    (d,) = eng.generate([[9, *c.token_ids, 0, 0]], SamplingParams(), [[]], [2])
    tr = Trajectory(
        prompt_ids=[9], response_ids=[*c.token_ids, 0, 0, *d.token_ids], action_mask=[1] * 5 + [0, 0, 1, 1]
    )
    assert eng.log.of(tr) == [(7, 7)]
    with pytest.raises(ValueError):
        ChunkedEngine(Scripted(""), chunk=0, refresh=lambda: 0)
