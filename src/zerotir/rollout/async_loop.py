"""The tool loop as one coroutine per trajectory, for an `AsyncEngine` (e.g. vLLM's AsyncLLM).

Each trajectory awaits its own model segments and its own executions, so a slow tool call holds
back nothing else and there are no rounds. It reuses the synchronous loop's state machine
(`_on_stop`, `_apply_result`, ...), so it records exactly the same tokens, masks and statuses; segment
k of a trajectory is sampled with seed `params.seed + 7919·k`, as round k of the rounds scheduler.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from zerotir.rollout.engine import AsyncEngine, SamplingParams
from zerotir.rollout.protocol import Template
from zerotir.rollout.tool_loop import (
    SandboxFailure,
    ToolLoopConfig,
    _apply_result,
    _closed_code,
    _finish,
    _on_stop,
    _record,
    _refuse,
    _State,
    _stops_for,
    context_window,
    response_limit,
)
from zerotir.rollout.tools import Tool
from zerotir.types import CompletionReason, ToolCall, Trajectory


async def _execute(
    sandbox: Any, tool: Tool, code: str, cfg: ToolLoopConfig, session: list[str] | None
) -> ToolCall | Exception:
    """One execution, resubmitted up to `cfg.sandbox_retries` times on infrastructure failures."""
    if sandbox is None:
        return SandboxFailure("no sandbox configured")
    last: Exception = SandboxFailure("no attempt")
    for _ in range(cfg.sandbox_retries + 1):
        try:
            fut = tool.submit(sandbox, code, cfg.exec_timeout_s, session)
            return await asyncio.wait_for(asyncio.wrap_future(fut), cfg.exec_timeout_s + 60)
        except Exception as e:  # noqa: BLE001 - an infrastructure failure, retried then reported as data
            last = e
    return last


async def run_trajectory(
    engine: AsyncEngine,
    sandbox: Any,
    prompt: list[int],
    template: Template,
    cfg: ToolLoopConfig,
    params: SamplingParams,
    tool: Tool | None = None,
) -> Trajectory:
    the_tool: Tool = tool if tool is not None else cfg.python_tool()
    tok = engine.tokenizer
    st = _State(
        Trajectory(prompt_ids=list(prompt)), response_limit(len(prompt), cfg, context_window(engine, cfg))
    )
    segment = 0
    while not st.done:
        budget = st.limit - len(st.traj.response_ids)
        if budget <= 0:
            _on_stop(st, None, CompletionReason.LENGTH, template, cfg, the_tool, tok)
            break
        sp = params if params.seed is None else replace(params, seed=params.seed + 7919 * segment)
        c = await engine.generate_one(
            st.traj.prompt_ids + st.traj.response_ids, sp, _stops_for(st, template, cfg, the_tool), budget
        )
        segment += 1
        _record(st, c.token_ids, c.logprobs)
        action = _on_stop(st, c.stop_str, c.finish_reason, template, cfg, the_tool, tok)
        if action == "refuse":
            _refuse(st, tok, the_tool)
        if action != "exec":
            continue
        code = _closed_code(st, tok, the_tool)
        res = await _execute(sandbox, the_tool, code, cfg, st.history if cfg.stateful else None)
        _apply_result(st, code, res, tok, cfg, the_tool)
    return _finish(st, tok, cfg)


async def run_trajectories(
    engine: AsyncEngine,
    sandbox: Any,
    prompts: list[list[int]],
    template: Template,
    cfg: ToolLoopConfig,
    params: SamplingParams,
    tool: Tool | None = None,
) -> list[Trajectory]:
    """Every prompt's trajectory concurrently (in order). Each prompt gets its own seed offset."""
    return list(
        await asyncio.gather(
            *(
                run_trajectory(
                    engine, sandbox, p, template, cfg,
                    params if params.seed is None else replace(params, seed=params.seed + 104729 * i), tool,
                )
                for i, p in enumerate(prompts)
            )
        )
    )  # fmt: skip
