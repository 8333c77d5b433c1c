"""One sampled trajectory as a self-describing JSON record for the rollout inspector.

A record carries everything the page shows without a tokenizer or a model: the prompt text, the
response split into segments by role (`model` = sampled and trained on, `tool` = injected sandbox
output, `notice` = the injected "tool call count has been exhausted" line), and a token table with
each token's id, text piece, action mask, rollout logprob, trainer logprob and advantage when known.
Building a record is pure given the tokenizer's `decode`; nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from zerotir.reward.segments import segments_from_mask, trajectory_answer
from zerotir.rollout.protocol import EXHAUSTED_NOTICE
from zerotir.types import Trajectory

SCHEMA_VERSION = 1
MAX_TOOL_TEXT = 2000
"""Characters kept of each tool call's code, stdout and stderr (the injected output is kept whole)."""
_LP_DIGITS = 4


def token_pieces(decode: Callable[[list[int]], str], ids: Sequence[int], window: int = 6) -> list[str]:
    """The text each token adds, decoding a short left context so that BPE/sentencepiece joins come out
    right (the same trick as streaming detokenizers). `"".join(pieces)` is the decoded text for
    byte-level tokenizers; for others it differs at most in whitespace at segment starts.

    >>> token_pieces(lambda ids: "".join(chr(i) for i in ids), [104, 105])
    ['h', 'i']
    """
    out: list[str] = []
    for i in range(len(ids)):
        lo = max(0, i - window)
        ctx = decode(list(ids[lo:i])) if i > lo else ""
        out.append(decode(list(ids[lo : i + 1]))[len(ctx) :])
    return out


def token_roles(pieces: Sequence[str], mask: Sequence[int]) -> list[str]:
    """`model` where mask is 1; among injected tokens, `notice` for those inside an exhausted notice
    (located by text, since the notice is tokenized together with the output block; a notice cut
    short by the length cap still counts), else `tool`."""
    roles = ["model" if m else "tool" for m in mask]
    notice = EXHAUSTED_NOTICE.strip()
    i = 0
    while i < len(mask):
        if mask[i]:
            i += 1
            continue
        j = i
        while j < len(mask) and not mask[j]:
            j += 1
        at = _notice_start("".join(pieces[i:j]), notice)
        if at >= 0:
            pos = 0
            for k in range(i, j):
                if pos + len(pieces[k]) > at:
                    roles[k] = "notice"
                pos += len(pieces[k])
        i = j
    return roles


def _notice_start(text: str, notice: str, min_prefix: int = 8) -> int:
    """Where the notice starts in an injected run, also when the length cap cut it short (-1: none)."""
    at = text.find(notice)
    if at >= 0:
        return at
    tail = text.rstrip()
    for k in range(min(len(notice), len(tail)), min_prefix - 1, -1):
        if tail.endswith(notice[:k]):
            return len(tail) - k
    return -1


def segments(pieces: Sequence[str], roles: Sequence[str]) -> list[dict]:
    """Consecutive tokens of one role joined: [{role, text, start, end}] with token index bounds."""
    out: list[dict] = []
    for k, (p, r) in enumerate(zip(pieces, roles)):
        if out and out[-1]["role"] == r:
            out[-1]["text"] += p
            out[-1]["end"] = k + 1
        else:
            out.append({"role": r, "text": p, "start": k, "end": k + 1})
    return out


def extracted_answer(
    tr: Trajectory, decode: Callable[[list[int]], str], allow_printed_answers: bool = False
) -> str | None:
    """The final answer as the grader reads it: from the model's own tokens (see `zerotir.task.MathTask`)."""
    segs = segments_from_mask(tr.response_ids, tr.action_mask, decode)
    return trajectory_answer(segs, allow_printed_answers=allow_printed_answers)


def _round(xs: Sequence[float] | None) -> list[float] | None:
    return None if xs is None else [round(float(x), _LP_DIGITS) for x in xs]


def build_record(
    tr: Trajectory,
    decode: Callable[[list[int]], str],
    *,
    step: int,
    policy_version: int | None = None,
    advantages: Sequence[float] | None = None,
    trainer_logprobs: Sequence[float] | None = None,
    allow_printed_answers: bool = False,
    trained: bool = False,
) -> dict:
    """A JSON-ready record of one trajectory.

    Args:
        tr: the trajectory, graded (reward and correct set).
        decode: the tokenizer's decode (ids -> text).
        step: the training step that sampled it.
        policy_version: weights version that sampled it (single process: the step).
        advantages: per response token (0 on injected tokens), when the trajectory was trained on.
        trainer_logprobs: the trainer's recomputed logprobs per response token, when available.
        allow_printed_answers: the grader's rule: whether a \\boxed answer printed by code counts.
        trained: whether it went into the update (kept by the group filter, not excluded).
    """
    T = len(tr.response_ids)
    for name, xs in (("advantages", advantages), ("trainer_logprobs", trainer_logprobs)):
        if xs is not None and len(xs) < T:
            raise ValueError(f"{name} has {len(xs)} entries for a response of {T} tokens")
    pieces = token_pieces(decode, tr.response_ids)
    roles = token_roles(pieces, tr.action_mask)
    versions = tr.meta.get("policy_versions")
    return {
        "schema": SCHEMA_VERSION,
        "step": step,
        "policy_version": policy_version if policy_version is not None else step,
        "segment_versions": versions,
        "group_id": tr.group_id,
        "prompt": decode(list(tr.prompt_ids)),
        "prompt_tokens": len(tr.prompt_ids),
        "segments": segments(pieces, roles),
        "tokens": {
            "ids": list(tr.response_ids),
            "text": pieces,
            "mask": list(tr.action_mask),
            "rollout_logprobs": _round(tr.old_logprobs),
            "trainer_logprobs": _round(trainer_logprobs[:T]) if trainer_logprobs is not None else None,
            "advantages": _round(advantages[:T]) if advantages is not None else None,
        },
        "tool_calls": [
            {
                "code": c.code[:MAX_TOOL_TEXT],
                "status": c.status,
                "seconds": round(c.seconds, 4),
                "exit_code": c.exit_code,
                "stdout": c.stdout[:MAX_TOOL_TEXT],
                "stderr": c.stderr[:MAX_TOOL_TEXT],
                "output": c.output,
            }
            for c in tr.tool_calls
        ],
        "finish_reason": tr.finish_reason,
        "reward": tr.reward,
        "correct": bool(tr.correct),
        "extracted_answer": extracted_answer(tr, decode, allow_printed_answers),
        "gold_answer": tr.answer,
        "excluded": bool(tr.excluded),
        "trained": trained,
        "model_tokens": tr.model_tokens,
        "total_tokens": T,
    }
