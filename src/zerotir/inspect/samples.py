"""Which trajectories of a step the inspector keeps, and the bounded `RUN_DIR/samples.jsonl` writer.

Selection is stratified so that a handful of samples per step still shows every kind of behaviour:
trajectories are bucketed by (correct, used code, had a tool error or timeout) and picked round-robin
across the buckets, rarest first, with a per-step seeded RNG inside each bucket.

Size on disk is bounded twice (`log.samples_per_step`, `log.samples_max_per_run`): when
steps x per-step would exceed the run cap, only every k-th step is sampled (k from `sampling_stride`)
so that late training is covered as well as early; the writer also refuses records past the run cap
(counting records already on disk, so a resumed run keeps its budget). A record costs about 30 bytes
per response token plus its text: 1,000 records of 4k-token responses are about 150 MB, of the toy
world's 160-token responses about 5 MB.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from zerotir.inspect.records import build_record
from zerotir.logger import drop_steps_from
from zerotir.types import Trajectory

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
_ERROR_STATUSES = frozenset({"error", "timeout", "killed"})


def stratum(tr: Trajectory) -> tuple[bool, bool, bool]:
    """(correct, used code, any tool call failed: error / timeout / killed)."""
    return (
        bool(tr.correct),
        bool(tr.tool_calls),
        any(c.status in _ERROR_STATUSES for c in tr.tool_calls),
    )


def select_stratified(trajs: Sequence[Trajectory], n: int, seed: int = 0) -> list[int]:
    """Indices of up to `n` trajectories covering as many strata as possible.

    Buckets are visited smallest first (ties by stratum key), taking one trajectory from each per
    round, so a lone tool error is never crowded out by many plain wrong answers. Returns indices in
    ascending order.
    """
    if n <= 0 or not trajs:
        return []
    rng = random.Random(seed)
    buckets: dict[tuple[bool, bool, bool], list[int]] = {}
    for i, tr in enumerate(trajs):
        buckets.setdefault(stratum(tr), []).append(i)
    order = sorted(buckets, key=lambda k: (len(buckets[k]), k))
    for k in order:
        rng.shuffle(buckets[k])
    picked: list[int] = []
    while len(picked) < n and any(buckets[k] for k in order):
        for k in order:
            if buckets[k] and len(picked) < n:
                picked.append(buckets[k].pop())
    return sorted(picked)


def sampling_stride(total_steps: int, per_step: int, max_per_run: int) -> int:
    """Sample every k-th step so that `per_step` samples at each sampled step fit in `max_per_run`.

    >>> sampling_stride(100, 4, 1000), sampling_stride(1000, 4, 1000), sampling_stride(1000, 8, 1000)
    (1, 4, 8)
    """
    if per_step <= 0 or max_per_run <= 0 or total_steps <= 0:
        return 1
    return max(1, math.ceil(total_steps * per_step / max_per_run))


class SampleWriter:
    """Appends stratified samples of each step to `RUN_DIR/samples.jsonl`, within both caps.

    Args:
        run_dir: the run directory.
        decode: the tokenizer's decode (ids -> text).
        per_step: samples kept per sampled step (0 disables the writer).
        max_per_run: records in the file at most, counting those already there (resume).
        total_steps: planned steps, to spread the run cap over the whole run.
        allow_printed_answers: the grader's rule, so the shown extracted answer is the graded one.
        resume_from_step: on resume, the checkpoint's step: records from it on are dropped (the
            resumed run samples those steps again; kept, the inspector showed them twice).
    """

    def __init__(
        self,
        run_dir: str | Path,
        decode: Callable[[list[int]], str],
        per_step: int,
        max_per_run: int,
        total_steps: int,
        allow_printed_answers: bool = False,
        resume_from_step: int | None = None,
    ):
        if per_step < 0 or max_per_run < 0:
            raise ValueError(f"sample caps must be >= 0 (got per_step={per_step}, max_per_run={max_per_run})")
        self.path = Path(run_dir) / SAMPLES_FILE
        self.decode = decode
        self.per_step = per_step
        self.max_per_run = max_per_run
        self.stride = sampling_stride(total_steps, per_step, max_per_run)
        self.last_step = total_steps - 1
        self.allow_printed_answers = allow_printed_answers
        if resume_from_step is not None:
            drop_steps_from(self.path, resume_from_step)
        self.written = _count_lines(self.path)

    @property
    def enabled(self) -> bool:
        return self.per_step > 0 and self.written < self.max_per_run

    def wants(self, step: int) -> bool:
        """Whether `step` is a sampled step (every `stride`-th, and always the last one)."""
        return self.enabled and (step % self.stride == 0 or step == self.last_step)

    def record_step(
        self,
        step: int,
        sampled: Sequence[Trajectory],
        trained: Sequence[Trajectory] = (),
        advantages: Sequence[Sequence[float]] | None = None,
        trainer_logprobs: Sequence[Sequence[float]] | None = None,
        policy_version: int | None = None,
    ) -> int:
        """Select and append this step's samples; returns how many were written.

        `advantages` and `trainer_logprobs` are per-token rows aligned with `trained` (the
        trajectories that went into the update, e.g. tensors of shape (B, T)); a sampled trajectory
        that was filtered out gets neither.
        """
        if not self.wants(step) or not sampled:
            return 0
        n = min(self.per_step, self.max_per_run - self.written)
        by_id = {id(tr): i for i, tr in enumerate(trained)}
        lines = []
        for i in select_stratified(sampled, n, seed=step):
            tr = sampled[i]
            j = by_id.get(id(tr))
            rec = build_record(
                tr,
                self.decode,
                step=step,
                policy_version=policy_version,
                advantages=_row(advantages, j),
                trainer_logprobs=_row(trainer_logprobs, j),
                allow_printed_answers=self.allow_printed_answers,
                trained=j is not None and not tr.excluded,
            )
            rec["index"] = i
            lines.append(json.dumps(rec, ensure_ascii=False))
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        self.written += len(lines)
        if self.written >= self.max_per_run:
            log.info("samples.jsonl reached log.samples_max_per_run=%d records; no more samples", self.max_per_run)
        return len(lines)


def _row(rows, j: int | None) -> list[float] | None:
    if rows is None or j is None:
        return None
    r = rows[j]
    return r.tolist() if hasattr(r, "tolist") else list(r)


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def read_samples(run_dir: str | Path) -> list[dict]:
    """The records of a run; a torn last line (a run killed mid-write) is skipped, not fatal."""
    path = Path(run_dir) / SAMPLES_FILE
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: unreadable record skipped", path, n)
    return out
