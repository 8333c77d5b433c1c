"""Outcome reward: is the final boxed answer equivalent to the reference?

Correctness of the grader matters more than speed: a false negative teaches the policy that a right
answer was wrong. A cheap normalised-string check catches the common case; everything else goes to
math-verify (sympy-backed equivalence of fractions, decimals, radicals, intervals, sets, ...).

math-verify's own timeouts use `signal.alarm`, which only works in a process's main thread. Here,
`timeout_s` is passed through only in the main thread; elsewhere (servers, Ray actors, threads) use
`grade_many` with a process pool, whose workers run in their own main threads and are killed if stuck.
"""

from __future__ import annotations

import re
import threading

from zerotir.reward.boxed import extract_boxed, strip_output_blocks

_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalize_answer(s: str) -> str:
    """A conservative normal form for the string fast path (never used to say 'wrong')."""
    s = s.strip().strip("$").strip()
    s = (
        s.replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
        .replace("\\left", "")
        .replace("\\right", "")
    )
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = _TEXT_WRAPPERS.sub(r"\1", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def answers_equivalent(pred: str, gold: str, timeout_s: int | None = 5) -> bool:
    """True if `pred` and `gold` denote the same mathematical answer."""
    if not pred.strip():
        return False
    if normalize_answer(pred) == normalize_answer(gold):
        return True
    from math_verify import parse, verify

    in_main = threading.current_thread() is threading.main_thread()
    t = timeout_s if in_main else None
    kw = {"parsing_timeout": t} if t is not None else {"parsing_timeout": None}
    try:
        g = parse(f"${gold}$", **kw)
        if not g:
            g = parse(gold, **kw)
        p = parse(f"$\\boxed{{{pred}}}$", **kw)
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=t))
    except Exception:  # noqa: BLE001 - an unparsable answer is simply not equivalent
        return False


def math_reward(
    response: str,
    answer: str,
    *,
    require_outside_output: bool = False,
    no_answer_reward: float = 0.0,
    timeout_s: int | None = 5,
) -> float:
    r"""1.0 if the last `\boxed{}` in `response` is equivalent to `answer`, else 0.0.

    >>> math_reward(r"... so the answer is \boxed{\frac{1}{2}}.", "0.5")
    1.0
    >>> math_reward("I don't know", "3")
    0.0
    """
    text = strip_output_blocks(response) if require_outside_output else response
    pred = extract_boxed(text)
    if pred is None:
        return no_answer_reward
    return 1.0 if answers_equivalent(pred, answer, timeout_s) else 0.0


def _grade_one(args: tuple[str, str, bool]) -> float:
    return math_reward(args[0], args[1], require_outside_output=args[2])


def grade_many(
    responses: list[str],
    answers: list[str],
    *,
    require_outside_output: bool = False,
    processes: int = 0,
    timeout_s: float = 10.0,
) -> list[float]:
    """Grade many responses; with `processes > 0` in a process pool (safe off the main thread).

    A response whose grading exceeds `timeout_s` scores 0 and the pool is rebuilt.
    """
    if processes <= 0:
        return [
            math_reward(r, a, require_outside_output=require_outside_output)
            for r, a in zip(responses, answers)
        ]
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out: list[float] = []
    with cf.ProcessPoolExecutor(processes, mp_context=ctx) as ex:
        futs = [ex.submit(_grade_one, (r, a, require_outside_output)) for r, a in zip(responses, answers)]
        for f in futs:
            try:
                out.append(f.result(timeout=timeout_s))
            except Exception:  # noqa: BLE001
                out.append(0.0)
    return out
