"""The tool-integrated rollout: generate, pause at a closed code block, execute, inject, resume.

The loop knows no tool specifics: the fences, the parsing of a call, its execution and how its
result is shown belong to a `Tool` (rollout/tools.py; `PythonTool` by default).
A batch proceeds in rounds: every unfinished trajectory generates until its next stop; those that
closed a ```python block have their code executed together (one `run_batch`), the formatted output
is tokenized *separately* and appended with action_mask 0, and they continue in the next round.
The model's sampled ids are never re-tokenized, so the trainer sees exactly what was sampled.

A per-turn context budget holds too: prompt + model + injected tokens never exceed the model's
context window (`max_context_len`, else the engine's `max_model_len` / the model config's
`max_position_embeddings`). A trajectory that reaches it finishes as `length` with
`meta["context_limited"]` set (metric `rollout/context_limited_ratio`).

Sandbox infrastructure failures are retried; if they persist the trajectory is excluded from the
loss (finish_reason `sandbox_error`) and never shown an "error" it did not cause.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass, field, replace

from zerotir.rollout.engine import Engine, SamplingParams, capabilities_of
from zerotir.rollout.protocol import Template
from zerotir.rollout.tools import CallStatus, PythonTool, Tool
from zerotir.sandbox.base import Sandbox
from zerotir.types import CompletionReason, FinishReason, ToolCall, ToolStatus, Trajectory


@dataclass(frozen=True)
class ToolLoopConfig:
    """The loop's knobs; built from `rollout.*` by `zerotir.build.tool_loop_config`."""

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
    scheduler: str = "auto"
    """auto | interactive (one decode loop; the engine must support it) | rounds."""
    max_context_len: int | None = None
    """Cap on prompt + response tokens (None: the engine's / model's context window)."""
    exhausted_notice: str = "on_attempt"
    """on_attempt: a block written past the budget is answered by the notice instead of run (then the
    fences stop nothing); after_last: the notice follows the last allowed output (fences stop nothing
    from there on)."""

    def python_tool(self) -> PythonTool:
        """Today's tool with this config's output cap, overflow policy and traceback length."""
        return PythonTool(self.output_max_tokens, self.overflow, self.error_lines)


@dataclass
class _State:
    traj: Trajectory
    limit: int = 0
    """Most response tokens (model + injected) this trajectory may hold."""
    in_code: bool = False
    done: bool = False
    history: list[str] = field(default_factory=list)
    turn_ends: list[str] = field(default_factory=list)
    refused: bool = False
    """A block written past the budget was answered with the exhausted notice."""


class SandboxFailure(RuntimeError):
    pass


def _fences_stop(st: _State, template: Template, cfg: ToolLoopConfig) -> bool:
    """Whether the tool's fences still stop generation: within the budget, and under `on_attempt`
    also past it until one block has been answered with the notice."""
    if not template.uses_tools:
        return False
    if len(st.traj.tool_calls) < cfg.max_tool_calls:
        return True
    return cfg.exhausted_notice == "on_attempt" and not st.refused


def _stops_for(st: _State, template: Template, cfg: ToolLoopConfig, tool: Tool) -> list[str]:
    if _fences_stop(st, template, cfg):
        return [tool.close] if st.in_code else [tool.open, *template.stop]
    return list(template.stop)


def _closed_code(st: _State, tok, tool: Tool) -> str:
    """The call the trajectory just closed (decoded from the sampled ids, never re-tokenized)."""
    return tool.parse_call(tok.decode(st.traj.response_ids)) or ""


def _failed(exc: BaseException) -> cf.Future:
    f: cf.Future = cf.Future()
    f.set_exception(exc)
    return f


def _record(st: _State, ids: list[int], lps: list[float]) -> None:
    tr = st.traj
    tr.response_ids += ids
    tr.action_mask += [1] * len(ids)
    tr.rollout_logprobs += lps


def _on_stop(
    st: _State, stop: str | None, reason: str, template: Template, cfg: ToolLoopConfig, tool: Tool, tok
) -> str:
    """Advance a trajectory after a model segment; returns "continue" (keep generating: inside a call
    now, or a stop string that did not really open or close one), "exec" (a call was closed),
    "refuse" (a call was closed past the budget: answer it with `_refuse`, do not run it) or
    "finish". Whether a closing stop really closed a call is the tool's grammar (`call_status`)."""
    tr = st.traj
    if reason == CompletionReason.LENGTH:
        st.done, tr.finish_reason = True, FinishReason.LENGTH
        st.turn_ends.append("length")
        return "finish"
    if reason == CompletionReason.STOP and stop == tool.open and not st.in_code:
        st.in_code = True
        return "continue"
    if reason == CompletionReason.STOP and stop == tool.close:
        status = tool.call_status(tok.decode(tr.response_ids))
        st.in_code = status == CallStatus.OPEN  # e.g. print("```"): the block goes on
        if status != CallStatus.CLOSED:
            return "continue"
        st.turn_ends.append("code")
        return "refuse" if len(tr.tool_calls) >= cfg.max_tool_calls else "exec"
    # eos or a template stop such as </answer>
    st.done = True
    tr.finish_reason = (
        FinishReason.STOP
        if len(tr.tool_calls) < cfg.max_tool_calls or not template.uses_tools
        else FinishReason.MAX_TOOL_CALLS
    )
    st.turn_ends.append("answer")
    return "finish"


def _apply_result(
    st: _State, code: str, res: ToolCall | Exception, tok, cfg: ToolLoopConfig, tool: Tool
) -> list[int] | None:
    """Record an execution and append its observation; returns the injected ids, or None when the
    trajectory ends here (sandbox failure, or the observation reached the length cap)."""
    tr = st.traj
    if isinstance(res, Exception):
        st.done, tr.finish_reason, tr.excluded = True, FinishReason.SANDBOX_ERROR, True
        tr.meta["sandbox_error"] = str(res)
        return None
    tr.tool_calls.append(res)
    if res.status == ToolStatus.OK:
        st.history.append(code)
    exhausted = cfg.exhausted_notice == "after_last" and len(tr.tool_calls) >= cfg.max_tool_calls
    return _inject(st, tool.observation_ids(tok, res, exhausted))


def _refuse(st: _State, tok, tool: Tool) -> list[int] | None:
    """Answer a block written past the budget with the exhausted notice, in place of its output (the
    block is not run). Injected like an output; returns the ids, or None when the cap ends the row."""
    st.refused = True
    st.traj.meta["refused_call"] = True
    return _inject(st, tool.refusal_ids(tok))


def _inject(st: _State, obs: list[int]) -> list[int] | None:
    """Append injected (masked) ids within the length cap; None when the trajectory ends here."""
    tr = st.traj
    room = st.limit - len(tr.response_ids)
    if len(obs) >= room:
        obs = obs[:room]
        st.done, tr.finish_reason = True, FinishReason.LENGTH
    tr.response_ids += obs
    tr.action_mask += [0] * len(obs)
    tr.rollout_logprobs += [0.0] * len(obs)
    return None if st.done else obs


def run_tool_rollout(
    engine: Engine,
    sandbox: Sandbox | None,
    prompts: list[list[int]],
    template: Template,
    cfg: ToolLoopConfig,
    params: SamplingParams,
    timings: dict[str, float] | None = None,
    tool: Tool | None = None,
) -> list[Trajectory]:
    """Sample one response per prompt (repeat prompts for groups). Returns token-exact trajectories.

    Engines whose capabilities say `interactive` (the HF engine) run the whole rollout in one decode
    loop while code executes in the background; others (vLLM, whose prefix cache makes re-prefill
    cheap) go in rounds. Both record the same tokens the same way. `timings` gets `generate_s` and
    `sandbox_s` (time generation stood still waiting for the sandbox). `tool` defaults to the
    `PythonTool` of `cfg`."""
    tok = engine.tokenizer
    tool = tool if tool is not None else cfg.python_tool()
    window = context_window(engine, cfg)
    states = [_State(Trajectory(prompt_ids=list(p)), response_limit(len(p), cfg, window)) for p in prompts]
    for st in states:
        if st.limit <= 0:  # the prompt alone fills the window: nothing may be sampled
            st.done, st.traj.finish_reason = True, FinishReason.LENGTH
            st.turn_ends.append("length")
    timings = timings if timings is not None else {}
    timings.setdefault("sandbox_s", 0.0)
    timings.setdefault("generate_s", 0.0)
    caps = capabilities_of(engine)
    # A sandbox without `submit` (a batch-only test double) can only serve the rounds scheduler.
    can_interact = caps.interactive and (sandbox is None or callable(getattr(sandbox, "submit", None)))
    if cfg.scheduler == "interactive" and not can_interact:
        raise ValueError(
            f"rollout.scheduler=interactive needs an interactive engine and a sandbox with submit "
            f"(got {type(engine).__name__}, {type(sandbox).__name__}); use rollout.scheduler=auto or rounds"
        )
    if can_interact and cfg.scheduler != "rounds":
        driver = _ToolDriver(states, sandbox, template, cfg, tok, timings, tool)
        t0 = time.perf_counter()
        engine.generate_interactive(  # type: ignore[attr-defined]
            [s.traj.prompt_ids for s in states], params, [s.limit for s in states], driver
        )
        timings["generate_s"] += time.perf_counter() - t0 - driver.waited_s
    else:
        _rounds(engine, sandbox, states, template, cfg, params, timings, tool)
    return [_finish(st, tok, cfg) for st in states]


def engine_window(engine: object) -> int | None:
    """An engine's context window: vLLM's `max_model_len`, a transformers model's
    `max_position_embeddings` (None if it states neither). Wrappers (ChunkedEngine) pass it on."""
    n = getattr(engine, "max_model_len", None)
    if n is None:
        n = getattr(getattr(getattr(engine, "model", None), "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def context_window(engine: object, cfg: ToolLoopConfig) -> int | None:
    """The most prompt + response tokens a trajectory may hold: the config's cap, else the engine's."""
    if cfg.max_context_len is not None:
        return cfg.max_context_len
    return engine_window(engine)


def response_limit(prompt_len: int, cfg: ToolLoopConfig, window: int | None) -> int:
    """Response tokens (model + injected) a trajectory with this prompt may hold."""
    if window is None:
        return cfg.max_response_len
    return max(0, min(cfg.max_response_len, window - prompt_len))


def _finish(st: _State, tok, cfg: ToolLoopConfig) -> Trajectory:
    st.traj.text = tok.decode(st.traj.response_ids)
    # Cut by the context window rather than by the response budget alone.
    st.traj.meta["context_limited"] = (
        st.traj.finish_reason == FinishReason.LENGTH
        and st.limit < cfg.max_response_len
        and len(st.traj.response_ids) >= st.limit
    )
    # A void turn (SimpleTIR): a turn that ended with neither a complete code block nor an answer.
    st.traj.meta["void_turn"] = any(e == "length" for e in st.turn_ends[:-1]) or (
        st.turn_ends[-1:] == ["answer"] and "\\boxed" not in st.traj.text
    )
    return st.traj


def _rounds(engine, sandbox, states, template, cfg, params, timings, tool: Tool) -> None:
    """Round-based scheduling: every unfinished trajectory generates to its next stop, the closed code
    blocks run together, and the next round re-submits prompt + response so far."""
    tok = engine.tokenizer
    # Engines that can switch stop strings mid-generation (HF, async vLLM) go from the opening fence
    # straight into the code block in one call; others (the synchronous vLLM engine, whose stop strings
    # are fixed per request) take two calls, as in the paper's code. Same tokens either way.
    switch = {tool.open: [tool.close]} if capabilities_of(engine).stop_switch else None
    round_idx = 0
    while True:
        active = [s for s in states if not s.done]
        if not active:
            break
        budgets = [s.limit - len(s.traj.response_ids) for s in active]
        stops = [_stops_for(s, template, cfg, tool) for s in active]
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
            _record(st, c.token_ids, c.logprobs)
            action = _on_stop(st, c.stop_str, c.finish_reason, template, cfg, tool, tok)
            if action == "exec":
                to_exec.append(st)
            elif action == "refuse":
                _refuse(st, tok, tool)
        if not to_exec:
            continue
        codes = [_closed_code(st, tok, tool) for st in to_exec]
        t0 = time.perf_counter()
        results = _execute_with_retries(
            sandbox, codes, [s.history if cfg.stateful else None for s in to_exec], cfg, tool
        )
        timings["sandbox_s"] += time.perf_counter() - t0
        for st, code, res in zip(to_exec, codes, results):
            _apply_result(st, code, res, tok, cfg, tool)


class _ToolDriver:
    """The tool loop as an engine `Interaction`: a closed code block is submitted to the sandbox at
    once and its row paused; the row resumes with the observation when the execution is done, while
    the other rows keep decoding. Infrastructure failures are resubmitted up to `sandbox_retries`."""

    def __init__(self, states, sandbox, template, cfg, tok, timings, tool: Tool):
        self.states, self.sandbox, self.template, self.cfg, self.tok = states, sandbox, template, cfg, tok
        self.tool = tool
        self.pending: dict[int, tuple[cf.Future, str, int]] = {}  # row -> (future, code, tries)
        self.ready: dict[int, list[int] | None] = {}  # row -> its refusal notice, handed out by `poll`
        self.deadline: dict[int, float] = {}
        self.waited_s = 0.0
        self.timings = timings

    def stops(self, i: int) -> list[str]:
        return _stops_for(self.states[i], self.template, self.cfg, self.tool)

    def on_stop(self, i: int, stop: str, token_ids: list[int], logprobs: list[float]) -> str:
        st = self.states[i]
        _record(st, token_ids, logprobs)
        action = _on_stop(st, stop, CompletionReason.STOP, self.template, self.cfg, self.tool, self.tok)
        if action == "refuse":
            self.ready[i] = _refuse(st, self.tok, self.tool)
            return "pause"
        if action != "exec":
            return action
        code = _closed_code(st, self.tok, self.tool)
        self.pending[i] = (self._submit(i, code), code, 0)
        return "pause"

    def on_end(self, i: int, reason: str, token_ids: list[int], logprobs: list[float]) -> None:
        _record(self.states[i], token_ids, logprobs)
        _on_stop(self.states[i], None, reason, self.template, self.cfg, self.tool, self.tok)

    def _submit(self, i: int, code: str) -> cf.Future:
        # A future that never resolves (a wedged sandbox) must not hang the rollout.
        self.deadline[i] = time.monotonic() + self.cfg.exec_timeout_s + 60
        if self.sandbox is None:
            return _failed(SandboxFailure("no sandbox configured"))
        session = self.states[i].history if self.cfg.stateful else None
        try:
            return self.tool.submit(self.sandbox, code, self.cfg.exec_timeout_s, session)
        except Exception as e:  # noqa: BLE001 - a pool that refuses work is an infrastructure failure
            return _failed(e)

    def poll(self, block: bool) -> dict[int, list[int] | None]:
        out: dict[int, list[int] | None] = dict(self.ready)
        self.ready.clear()
        while True:
            for i, (fut, code, tries) in list(self.pending.items()):
                if not fut.done() and time.monotonic() < self.deadline[i]:
                    continue
                exc = fut.exception() if fut.done() else SandboxFailure("sandbox gave no answer in time")
                if exc is not None and tries < self.cfg.sandbox_retries:
                    self.pending[i] = (self._submit(i, code), code, tries + 1)
                    continue
                del self.pending[i]
                res = exc if exc is not None else fut.result()
                out[i] = _apply_result(self.states[i], code, res, self.tok, self.cfg, self.tool)
            if out or not block or not self.pending:
                return out
            t0 = time.perf_counter()
            cf.wait(
                [f for f, _, _ in self.pending.values()],
                timeout=max(0.0, min(self.deadline[i] for i in self.pending) - time.monotonic()),
                return_when=cf.FIRST_COMPLETED,
            )
            waited = time.perf_counter() - t0
            self.waited_s += waited
            self.timings["sandbox_s"] += waited


def _execute_with_retries(sandbox, codes, sessions, cfg, tool: Tool) -> list[ToolCall | Exception]:
    if sandbox is None:
        return [SandboxFailure("no sandbox configured")] * len(codes)
    results = tool.run_batch(sandbox, codes, cfg.exec_timeout_s, sessions)
    for _ in range(cfg.sandbox_retries):
        bad = [i for i, r in enumerate(results) if isinstance(r, Exception)]
        if not bad:
            break
        again = tool.run_batch(
            sandbox, [codes[i] for i in bad], cfg.exec_timeout_s, [sessions[i] for i in bad]
        )
        for i, r in zip(bad, again):
            results[i] = r
    return results
