"""The tool-integrated rollout: generate, pause at a closed code block, execute, inject, resume.

A batch proceeds in rounds: every unfinished trajectory generates until its next stop; those that
closed a ```python block have their code executed together (one `run_batch`), the formatted output
is tokenized *separately* and appended with action_mask 0, and they continue in the next round.
The model's sampled ids are never re-tokenized, so the trainer sees exactly what was sampled.

Sandbox infrastructure failures are retried; if they persist the trajectory is excluded from the
loss (finish_reason `sandbox_error`) and never shown an "error" it did not cause.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from zerotir.rollout.engine import Engine, SamplingParams
from zerotir.rollout.protocol import (
    CODE_CLOSE,
    CODE_OPEN,
    EXHAUSTED_NOTICE,
    TOO_LONG_NOTICE,
    Template,
    extract_last_code,
    format_output,
    wrap_output,
)
from zerotir.sandbox.base import Sandbox
from zerotir.types import ToolCall, Trajectory


@dataclass(frozen=True)
class ToolLoopConfig:
    max_tool_calls: int = 2
    max_response_len: int = 512
    """Cap on model + injected tokens of one response."""
    output_max_tokens: int = 256
    overflow: str = "replace"
    """replace (paper's code: a 'too long' notice) | truncate (keep the tail)."""
    exec_timeout_s: float = 5.0
    error_lines: int = 3
    stateful: bool = False
    """Replay earlier successful blocks of the same response before each new one."""
    sandbox_retries: int = 2


@dataclass
class _State:
    traj: Trajectory
    in_code: bool = False
    done: bool = False
    history: list[str] = field(default_factory=list)
    turn_ends: list[str] = field(default_factory=list)


class SandboxFailure(RuntimeError):
    pass


def _stops_for(st: _State, template: Template, cfg: ToolLoopConfig) -> list[str]:
    tools_on = template.uses_tools and len(st.traj.tool_calls) < cfg.max_tool_calls
    if tools_on:
        return [CODE_CLOSE] if st.in_code else [CODE_OPEN, *template.stop]
    return list(template.stop)


def _observation_ids(tokenizer, tc: ToolCall, cfg: ToolLoopConfig, exhausted: bool) -> list[int]:
    body = format_output(tc.stdout, tc.stderr, tc.status, error_lines=cfg.error_lines)
    body_ids = tokenizer.encode(body, add_special_tokens=False)
    if len(body_ids) > cfg.output_max_tokens:
        if cfg.overflow == "truncate":
            body = "[...]\n" + tokenizer.decode(body_ids[-cfg.output_max_tokens :])
        else:
            body = TOO_LONG_NOTICE
    tc.output = body
    text = wrap_output(body) + (EXHAUSTED_NOTICE if exhausted else "")
    return tokenizer.encode(text, add_special_tokens=False)


def run_tool_rollout(
    engine: Engine,
    sandbox: Sandbox | None,
    prompts: list[list[int]],
    template: Template,
    cfg: ToolLoopConfig,
    params: SamplingParams,
    timings: dict[str, float] | None = None,
) -> list[Trajectory]:
    """Sample one response per prompt (repeat prompts for groups). Returns token-exact trajectories."""
    tok = engine.tokenizer
    states = [_State(Trajectory(prompt_ids=list(p))) for p in prompts]
    timings = timings if timings is not None else {}
    timings.setdefault("sandbox_s", 0.0)
    timings.setdefault("generate_s", 0.0)
    # Engines that can switch stop strings mid-generation go from the opening fence straight into the
    # code block in one call; others (vLLM) take two calls, as in the paper's code. Same tokens either way.
    switch = {CODE_OPEN: [CODE_CLOSE]} if getattr(engine, "supports_stop_switch", False) else None
    round_idx = 0
    while True:
        active = [s for s in states if not s.done]
        if not active:
            break
        budgets = [cfg.max_response_len - len(s.traj.response_ids) for s in active]
        stops = [_stops_for(s, template, cfg) for s in active]
        sp = params if params.seed is None else replace(params, seed=params.seed + 7919 * round_idx)
        t0 = time.perf_counter()
        inputs = [s.traj.prompt_ids + s.traj.response_ids for s in active]
        if switch:
            comps = engine.generate(inputs, sp, stops, budgets, stop_switch=switch)
        else:
            comps = engine.generate(inputs, sp, stops, budgets)
        timings["generate_s"] += time.perf_counter() - t0
        round_idx += 1
        to_exec: list[_State] = []
        for st, c in zip(active, comps):
            tr = st.traj
            tr.response_ids += c.token_ids
            tr.action_mask += [1] * len(c.token_ids)
            tr.old_logprobs += c.logprobs
            if c.finish_reason == "length":
                st.done, tr.finish_reason = True, "length"
                st.turn_ends.append("length")
            elif c.finish_reason == "stop" and c.stop_str == CODE_OPEN:
                st.in_code = True
            elif c.finish_reason == "stop" and c.stop_str == CODE_CLOSE:
                st.in_code = False
                to_exec.append(st)
                st.turn_ends.append("code")
            else:  # eos or a template stop such as </answer>
                st.done = True
                tr.finish_reason = (
                    "stop"
                    if len(tr.tool_calls) < cfg.max_tool_calls or not template.uses_tools
                    else "max_tool_calls"
                )
                st.turn_ends.append("answer")
        if not to_exec:
            continue
        codes = []
        for st in to_exec:
            text = tok.decode(st.traj.response_ids)
            codes.append(extract_last_code(text) or "")
        t0 = time.perf_counter()
        results = _execute_with_retries(
            sandbox, codes, [s.history if cfg.stateful else None for s in to_exec], cfg
        )
        timings["sandbox_s"] += time.perf_counter() - t0
        for st, code, res in zip(to_exec, codes, results):
            tr = st.traj
            if isinstance(res, Exception):
                st.done, tr.finish_reason, tr.excluded = True, "sandbox_error", True
                tr.meta["sandbox_error"] = str(res)
                continue
            tr.tool_calls.append(res)
            if res.status == "ok":
                st.history.append(code)
            exhausted = len(tr.tool_calls) >= cfg.max_tool_calls
            obs = _observation_ids(tok, res, cfg, exhausted)
            room = cfg.max_response_len - len(tr.response_ids)
            if len(obs) >= room:
                obs = obs[:room]
                st.done, tr.finish_reason = True, "length"
            tr.response_ids += obs
            tr.action_mask += [0] * len(obs)
            tr.old_logprobs += [0.0] * len(obs)
    for st in states:
        st.traj.text = tok.decode(st.traj.response_ids)
        # A void turn (SimpleTIR): a turn that ended with neither a complete code block nor an answer.
        st.traj.meta["void_turn"] = any(e == "length" for e in st.turn_ends[:-1]) or (
            st.turn_ends[-1:] == ["answer"] and "\\boxed" not in st.traj.text
        )
    return [s.traj for s in states]


def _execute_with_retries(sandbox, codes, sessions, cfg) -> list[ToolCall | Exception]:
    if sandbox is None:
        return [SandboxFailure("no sandbox configured")] * len(codes)
    results = sandbox.run_batch_sync(codes, cfg.exec_timeout_s, sessions)
    for _ in range(cfg.sandbox_retries):
        bad = [i for i, r in enumerate(results) if isinstance(r, Exception)]
        if not bad:
            break
        again = sandbox.run_batch_sync(
            [codes[i] for i in bad], cfg.exec_timeout_s, [sessions[i] for i in bad]
        )
        for i, r in zip(bad, again):
            results[i] = r
    return results
