"""Outcome reward: is the final boxed answer equivalent to the reference?

Correctness of the grader matters more than speed: a false negative teaches the policy that a right
answer was wrong, a false positive that a wrong one was right. A cheap normalised-string check catches
the common case; everything else goes to math-verify (sympy-backed equivalence of fractions, decimals,
radicals, intervals, sets, ...), after a guard against answers that sympy reads too kindly (`1 2` is
not 12 and not 3, `5 \\lor 7` is not 7, nothing equals an empty reference).

A deadline covers the whole grading of one response. math-verify's own timeouts use `signal.alarm`,
which only works in a process's main thread: there, extraction runs under a `setitimer` alarm and each
math-verify call gets what is left of the budget. Off the main thread (servers, Ray actors, threads)
nothing can interrupt sympy in-process: use `zerotir.reward.pool.GradingPool` / `grade_many` with
processes, whose workers run in their own main threads and are killed when stuck.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
import time
from collections.abc import Iterator

from zerotir.reward.boxed import MultiBox, extract_boxed, strip_output_blocks

_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+")
_SPACED_THOUSANDS = re.compile(r"-?\d{1,3}(?: \d{3})+")
_DIGITS_APART = re.compile(r"\d\s+\d")
_LOGIC = re.compile(r"\\(?:lor|land|vee|wedge|lnot|neg)(?![A-Za-z])")
# LaTeX spacing: thin, medium, thick and negative spaces, `\ `, `~`, quads, an empty `\text{ }`.
_LATEX_SPACE = re.compile(r"\\[,:;! ]|\\q?quad(?![A-Za-z])|~|\\(?:text|mbox|mathrm)\{\s*\}")
_NUMBER = r"\s*-?\d+(?:\.\d+)?\s*"
# Two different numbers joined by an operator math-verify reads as its last operand (`17 \bmod 23`,
# `17 \mid 23`, `17 \cup 23`, `17 = 23`, `17 \\ 23` all equal 23 to it).
_LAST_OPERAND = re.compile(rf"({_NUMBER})(?:\\bmod|\\mid|\\cap|\\cup|\\\\|=)({_NUMBER})")


def _latex_spaces_as_spaces(s: str) -> str:
    r"""Spacing commands as plain spaces, so that digits they set apart stay apart (`3\,2` is not 32)
    while thousands groups still read as one number (`1\,000` is 1000, and MATH's `10,\!000` too)."""
    return _LATEX_SPACE.sub(" ", s.replace(",\\!", ","))


class GradingTimeout(Exception):
    """The grading of one response ran past its deadline."""


def normalize_answer(s: str) -> str:
    """A conservative normal form for the string fast path (never used to say 'wrong').

    Thousands separators are read before spaces are dropped: `1,000` and `1 000` are 1000, but
    `32, 349` (a list) is not 32349 and `1 2` is not 12.
    """
    s = s.strip().strip("$").strip()
    s = (
        s.replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
        .replace("\\left", "")
        .replace("\\right", "")
    )
    s = _latex_spaces_as_spaces(s)
    s = _TEXT_WRAPPERS.sub(r"\1", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "").replace("%", "")
    s = s.strip().rstrip(".").strip()
    if _THOUSANDS.fullmatch(s) or _SPACED_THOUSANDS.fullmatch(s):
        s = s.replace(",", "").replace(" ", "")
    if _DIGITS_APART.search(s):
        return s  # digits apart stay apart: no space-free form that would merge them
    s = re.sub(r"\s+", "", s)
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def _not_an_answer(pred: str) -> bool:
    """Answers that sympy reads too kindly: logic connectives (math-verify reads `5 \\lor 7` as 7
    and `x=1 \\lor x=2` as 2), digits separated by spaces or LaTeX spacing that are not thousands
    groups (it reads `1 2` as 3 and `3\\,2` as 32), and two different numbers joined by an
    operator it reads as the last one (`17 \\bmod 23` as 23)."""
    if _LOGIC.search(pred):
        return True
    two = _LAST_OPERAND.fullmatch(pred)
    if two and float(two.group(1)) != float(two.group(2)):
        return True
    spaced = _latex_spaces_as_spaces(pred)
    return any(not _SPACED_THOUSANDS.fullmatch(m.group()) for m in re.finditer(r"-?\d+(?:\s+\d+)+", spaced))


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise `GradingTimeout` in the block after `seconds` of wall time (main thread only; elsewhere
    a no-op). Do not call math-verify inside: its own `signal.alarm` would cancel this one."""
    if seconds is None or not _in_main_thread():
        yield
        return
    if seconds <= 0:
        raise GradingTimeout("no time left")

    def _fire(signum, frame):
        raise GradingTimeout(f"grading exceeded {seconds:.3g} s")

    old = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _left(t_end: float | None) -> int | None:
    """math-verify's timeout argument (whole seconds) for what is left of the budget."""
    if t_end is None or not _in_main_thread():
        return None
    left = t_end - time.monotonic()
    if left <= 0:
        raise GradingTimeout("grading budget spent")
    return max(1, math.ceil(left))


def answers_equivalent(pred: str, gold: str, timeout_s: float | None = 5) -> bool:
    """True if `pred` and `gold` denote the same mathematical answer.

    An empty reference (after normalisation) matches nothing: it is a data error, not a free point.
    """
    t_end = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        with deadline(timeout_s):
            p, g = normalize_answer(pred), normalize_answer(gold)
            if not p or not g:
                return False
            if p == g:
                return True
            if _not_an_answer(pred):
                return False
        from math_verify import parse, verify

        gp = parse(f"${gold}$", parsing_timeout=_left(t_end))
        if not gp:
            gp = parse(gold, parsing_timeout=_left(t_end))
        pp = parse(f"$\\boxed{{{pred}}}$", parsing_timeout=_left(t_end))
        if not gp or not pp:
            return False
        return bool(verify(gp, pp, timeout_seconds=_left(t_end)))
    except GradingTimeout:
        return False
    except Exception:  # noqa: BLE001 - an unparsable answer is simply not equivalent
        return False


def math_reward(
    response: str,
    answer: str,
    *,
    require_outside_output: bool = False,
    no_answer_reward: float = 0.0,
    timeout_s: float | None = 5,
    multi_box: MultiBox | str = MultiBox.ALL,
) -> float:
    r"""1.0 if the final `\boxed{}` answer of `response` is equivalent to `answer`, else 0.0.

    Text only: it cannot know who wrote what. For trajectories, `zerotir.reward.segments` grades
    from the model's own tokens. `timeout_s` bounds the whole grading, extraction included (main
    thread; see the module docstring).

    >>> math_reward(r"... so the answer is \boxed{\frac{1}{2}}.", "0.5")
    1.0
    >>> math_reward(r"The roots are \boxed{-2} and \boxed{1}.", "1, -2")
    1.0
    >>> math_reward("I don't know", "3")
    0.0
    """
    t_end = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        with deadline(timeout_s):
            text = strip_output_blocks(response) if require_outside_output else response
            pred = extract_boxed(text, multi_box)
    except GradingTimeout:
        return 0.0
    if pred is None:
        return no_answer_reward
    left = None if t_end is None else t_end - time.monotonic()
    if left is not None and left <= 0:
        return 0.0
    return 1.0 if answers_equivalent(pred, answer, left) else 0.0


def grade_many(
    responses: list[str],
    answers: list[str],
    *,
    require_outside_output: bool = False,
    processes: int = 0,
    timeout_s: float = 10.0,
    multi_box: MultiBox | str = MultiBox.ALL,
) -> list[float]:
    """Grade many responses; with `processes > 0` in a `GradingPool` (safe off the main thread).

    A response whose grading exceeds `timeout_s` scores 0; its worker is killed and replaced, and
    every other response is graded as usual.
    """
    if len(responses) != len(answers):
        raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
    if processes <= 0:
        return [
            math_reward(
                r, a, require_outside_output=require_outside_output, timeout_s=timeout_s, multi_box=multi_box
            )
            for r, a in zip(responses, answers)
        ]
    from zerotir.reward.pool import GradingPool

    with GradingPool(processes, timeout_s=timeout_s) as pool:
        return pool.grade(
            responses, answers, require_outside_output=require_outside_output, multi_box=multi_box
        )
