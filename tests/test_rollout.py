"""The tool-integrated rollout, proven with a scripted engine and a real sandbox; engine logprobs
against the trainer's recomputation on a tiny random Qwen2."""

import re
from dataclasses import replace

import pytest
import torch

from zerotir.rollout import SamplingParams, ToolLoopConfig, get_template, rollout_metrics, run_tool_rollout
from zerotir.rollout.engine import Completion
from zerotir.rollout.protocol import CODE_CLOSE, CODE_OPEN, EXHAUSTED_NOTICE, TOO_LONG_NOTICE, wrap_output
from zerotir.rollout.tools import FENCE_OPEN_STOP
from zerotir.sandbox.pool import SandboxInfraError
from zerotir.toy.tokenizer import build_byte_tokenizer

TOK = build_byte_tokenizer()


class ScriptedEngine:
    """Writes `n_blocks` code blocks (each printing `code`), then a boxed answer; honours stops and budgets."""

    def __init__(self, code="print(6*7)", n_blocks=1, answer="42"):
        self.tokenizer = TOK
        self.code, self.n_blocks, self.answer = code, n_blocks, answer
        self.calls = 0

    def load_weights(self, sd, version=0):
        pass

    def generate(self, prompts, params, stops, max_tokens=None):
        self.calls += 1
        out = []
        for i, p in enumerate(prompts):
            ctx = TOK.decode(p).split("Answer:", 1)[-1]
            written = ctx.count(FENCE_OPEN_STOP)
            if stops[i] == [CODE_CLOSE]:  # inside a block: finish the fence's tag if the stop cut it
                rest = CODE_OPEN[len(FENCE_OPEN_STOP) :] if ctx.endswith(FENCE_OPEN_STOP) else ""
                text = f"{rest}\n{self.code}\n{CODE_CLOSE}"
            elif written < self.n_blocks:
                text = f"Let me compute.\n{CODE_OPEN}\n{self.code}\n{CODE_CLOSE}\n"
            else:
                text = f"The answer is \\boxed{{{self.answer}}}."
            cut = [(text.find(s) + len(s), s) for s in stops[i] if s in text]
            stop_str = None
            if cut:
                end, stop_str = min(cut)
                text = text[:end]
            ids = TOK.encode(text, add_special_tokens=False)
            reason = "stop" if stop_str else "eos"
            if not stop_str:
                ids = ids + [TOK.eos_token_id]
            budget = max_tokens[i] if max_tokens else params.max_new_tokens
            if len(ids) > budget:
                ids, reason, stop_str = ids[:budget], "length", None
            out.append(Completion(ids, [-0.5] * len(ids), reason, stop_str))
        return out


def prompts(n=2, tmpl="toy-zerotir"):
    t = get_template(tmpl)
    return [TOK.encode(t.render("What is 6 * 7?"), add_special_tokens=False) for _ in range(n)], t


def injected_spans(text):
    return [
        (m.start(), m.end())
        for m in re.finditer(r"\n```output\n.*?\n```\n(?:\nTool call count[^\n]*\n)?", text, re.DOTALL)
    ]


def test_loop_executes_injects_and_masks(local_sandbox):
    ps, t = prompts(2)
    trajs = run_tool_rollout(
        ScriptedEngine(), local_sandbox, ps, t, ToolLoopConfig(max_tool_calls=2), SamplingParams(seed=0)
    )
    for tr in trajs:
        assert (
            len(tr.tool_calls) == 1 and tr.tool_calls[0].stdout == "42\n" and tr.tool_calls[0].status == "ok"
        )
        assert "```output\n42\n```" in tr.text
        assert TOK.decode(tr.response_ids) == tr.text
        assert len(tr.response_ids) == len(tr.action_mask) == len(tr.old_logprobs)
        # map each token to its character span; the mask must be 0 exactly on the injected block
        spans = injected_spans(tr.text)
        assert len(spans) == 1
        pos, expected = 0, []
        for tid in tr.response_ids:
            n = len(TOK.decode([tid]))
            expected.append(0 if any(a <= pos and pos + n <= b for a, b in spans) else 1)
            pos += n
        assert tr.action_mask == expected
        assert sum(1 - m for m in expected) == len(
            TOK.encode("\n```output\n42\n```\n", add_special_tokens=False)
        )
        assert all(lp == 0.0 for lp, m in zip(tr.old_logprobs, tr.action_mask) if m == 0)
        assert tr.finish_reason == "stop"


def test_call_cap_and_exhausted_notice_on_attempt(local_sandbox):
    """The default protocol: a block written past the budget is not run; its output block is the
    notice, and from there on fences stop nothing (the model must answer in text)."""
    ps, t = prompts(1)
    eng = ScriptedEngine(n_blocks=3)
    tr = run_tool_rollout(eng, local_sandbox, ps, t, ToolLoopConfig(max_tool_calls=2), SamplingParams())[0]
    assert len(tr.tool_calls) == 2
    assert tr.text.count(CODE_OPEN) == 3  # the third block is written but never executed
    assert tr.text.count("```output") == 3
    refusal = wrap_output(EXHAUSTED_NOTICE.strip())
    assert tr.text.count(EXHAUSTED_NOTICE.strip()) == 1
    assert tr.text.index(refusal) > tr.text.rindex(CODE_OPEN)  # it answers the third block
    assert tr.meta["refused_call"] and tr.finish_reason == "max_tool_calls"
    assert "\\boxed{42}" in tr.text and TOK.decode(tr.response_ids) == tr.text
    # the notice is injected: masked out of the loss like an output
    n_notice = len(TOK.encode(refusal, add_special_tokens=False))
    n_outputs = sum(len(TOK.encode(wrap_output(c.output), add_special_tokens=False)) for c in tr.tool_calls)
    assert tr.action_mask.count(0) == n_outputs + n_notice


def test_call_cap_and_exhausted_notice_after_last(local_sandbox):
    ps, t = prompts(1)
    eng = ScriptedEngine(n_blocks=3)
    cfg = ToolLoopConfig(max_tool_calls=2, exhausted_notice="after_last")
    tr = run_tool_rollout(eng, local_sandbox, ps, t, cfg, SamplingParams())[0]
    assert len(tr.tool_calls) == 2
    assert tr.text.count("```output") == 2
    assert EXHAUSTED_NOTICE.strip() in tr.text
    assert tr.text.count(CODE_OPEN) == 3  # the third block is written but never executed
    assert TOK.decode(tr.response_ids) == tr.text


@pytest.mark.parametrize("protocol,notice", [("on_attempt", False), ("after_last", True)])
def test_a_budget_the_model_does_not_exceed_shows_no_notice(local_sandbox, protocol, notice):
    """Evaluated at budget 1, a policy that makes one call sees what it saw in training at budget 2
    (the old `after_last` protocol showed it a notice it had never seen right after its first output)."""
    ps, t = prompts(1)
    cfg = ToolLoopConfig(max_tool_calls=1, exhausted_notice=protocol)
    tr = run_tool_rollout(ScriptedEngine(n_blocks=1), local_sandbox, ps, t, cfg, SamplingParams())[0]
    assert len(tr.tool_calls) == 1 and tr.tool_calls[0].stdout == "42\n"
    assert (EXHAUSTED_NOTICE.strip() in tr.text) is notice
    assert "refused_call" not in tr.meta


def test_budget_zero_answers_the_first_block_with_the_notice():
    """Budget 0 under the tool template: nothing runs (no sandbox is even needed), the block gets the
    notice, the answer follows in text."""
    ps, t = prompts(1)
    tr = run_tool_rollout(ScriptedEngine(n_blocks=1), None, ps, t, ToolLoopConfig(max_tool_calls=0),
                          SamplingParams())[0]  # fmt: skip
    assert tr.tool_calls == [] and not tr.excluded
    assert wrap_output(EXHAUSTED_NOTICE.strip()) in tr.text and "\\boxed{42}" in tr.text


def test_interactive_driver_answers_a_call_past_the_budget_without_running_it():
    from zerotir.rollout.tool_loop import _State, _ToolDriver
    from zerotir.types import Trajectory

    t = get_template("toy-zerotir")
    st = _State(Trajectory(prompt_ids=[1]), limit=400)
    drv = _ToolDriver(
        [st], None, t, ToolLoopConfig(max_tool_calls=0), TOK, {}, ToolLoopConfig().python_tool()
    )
    ids = lambda s: TOK.encode(s, add_special_tokens=False)  # noqa: E731
    assert drv.stops(0) == [FENCE_OPEN_STOP]
    assert drv.on_stop(0, FENCE_OPEN_STOP, ids(FENCE_OPEN_STOP), [0.0] * len(FENCE_OPEN_STOP)) == "continue"
    assert drv.on_stop(0, "```", ids("thon\nprint(1)\n```"), [0.0] * 16) == "pause"
    assert not drv.pending  # nothing was submitted
    notice = ids(wrap_output(EXHAUSTED_NOTICE.strip()))
    assert drv.poll(block=False) == {0: notice} and drv.poll(block=False) == {}
    assert drv.stops(0) == []  # past the notice, fences stop nothing


def test_no_tool_template_never_executes(local_sandbox):
    ps, t = prompts(1, "toy-zerorl")
    tr = run_tool_rollout(
        ScriptedEngine(), local_sandbox, ps, t, ToolLoopConfig(max_tool_calls=2), SamplingParams()
    )[0]
    assert tr.tool_calls == [] and "```output" not in tr.text and all(m == 1 for m in tr.action_mask)


def test_length_cap(local_sandbox):
    ps, t = prompts(1)
    for cap in (10, 30, 45):
        tr = run_tool_rollout(
            ScriptedEngine(), local_sandbox, ps, t, ToolLoopConfig(max_response_len=cap), SamplingParams()
        )[0]
        assert len(tr.response_ids) <= cap
        assert tr.finish_reason == "length"


def test_long_output_replaced_or_truncated(local_sandbox):
    ps, t = prompts(1)
    eng = ScriptedEngine(code="print('y' * 5000)")
    tr = run_tool_rollout(
        eng,
        local_sandbox,
        ps,
        t,
        ToolLoopConfig(output_max_tokens=50, max_response_len=400),
        SamplingParams(),
    )[0]
    assert TOO_LONG_NOTICE in tr.text and "yyyyy" * 20 not in tr.text
    tr = run_tool_rollout(
        eng,
        local_sandbox,
        ps,
        t,
        ToolLoopConfig(output_max_tokens=50, overflow="truncate", max_response_len=400),
        SamplingParams(),
    )[0]
    assert "[...]" in tr.text and tr.tool_calls[0].output.endswith("y")


def test_error_traceback_trimmed(local_sandbox):
    ps, t = prompts(1)
    tr = run_tool_rollout(
        ScriptedEngine(code="def f():\n    return 1/0\nf()"),
        local_sandbox,
        ps,
        t,
        ToolLoopConfig(error_lines=1),
        SamplingParams(),
    )[0]
    assert tr.tool_calls[0].status == "error"
    assert tr.tool_calls[0].output == "ZeroDivisionError: division by zero"


class FlakySandbox:
    def __init__(self, fail_times):
        self.fail_times, self.calls = fail_times, 0
        from zerotir.sandbox.base import LocalSandbox  # noqa: F401

    def run_batch_sync(self, codes, timeout_s=10.0, sessions=None):
        self.calls += 1
        if self.calls <= self.fail_times:
            return [SandboxInfraError("down")] * len(codes)
        from zerotir.types import ToolCall

        return [ToolCall(code=c, stdout="42\n") for c in codes]


def test_sandbox_failure_retried_then_excluded():
    ps, t = prompts(2)
    sb = FlakySandbox(fail_times=1)
    trajs = run_tool_rollout(ScriptedEngine(), sb, ps, t, ToolLoopConfig(sandbox_retries=2), SamplingParams())
    assert all(tr.tool_calls and not tr.excluded for tr in trajs)  # recovered on retry
    sb = FlakySandbox(fail_times=99)
    trajs = run_tool_rollout(ScriptedEngine(), sb, ps, t, ToolLoopConfig(sandbox_retries=2), SamplingParams())
    assert sb.calls == 3
    assert all(tr.excluded and tr.finish_reason == "sandbox_error" for tr in trajs)
    assert all("UnknownError" not in tr.text and "```output" not in tr.text for tr in trajs)
    assert rollout_metrics(trajs)["rollout/sandbox_fail_ratio"] == 1.0


def test_rollout_metrics_names(local_sandbox):
    ps, t = prompts(2)
    trajs = run_tool_rollout(ScriptedEngine(), local_sandbox, ps, t, ToolLoopConfig(), SamplingParams())
    for tr in trajs:
        tr.correct = True
    m = rollout_metrics(trajs)
    for k in (
        "rollout/code_ratio",
        "rollout/tool_calls_mean",
        "rollout/tool_error_ratio",
        "rollout/tool_timeout_ratio",
        "rollout/response_len_mean",
        "rollout/total_len_mean",
        "rollout/finish_length_ratio",
        "reward/accuracy",
    ):
        assert k in m
    assert m["rollout/code_ratio"] == 1.0 and m["rollout/total_len_mean"] > m["rollout/response_len_mean"]


@pytest.fixture(scope="module")
def tiny_qwen():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(TOK),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=TOK.eos_token_id,
        pad_token_id=TOK.pad_token_id,
    )
    return Qwen2ForCausalLM(cfg).eval()


def test_engine_logprobs_match_trainer_recompute(tiny_qwen):
    """Multi-round: generate, inject tool tokens, generate again; the trainer's recomputed logprobs on
    the final ids equal the engine's on every model token (fp32, 1e-4)."""
    from zerotir.rollout.hf_engine import HFEngine
    from zerotir.train.batch import collate, response_logits, token_logprobs
    from zerotir.types import Trajectory

    eng = HFEngine(tiny_qwen, TOK)
    prompts_ = [
        TOK.encode(s, add_special_tokens=False)
        for s in ("Question: 1+1?", "Q: what is 12 * 13 exactly?", "x")
    ]
    params = SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=12, seed=3)
    trajs = [Trajectory(prompt_ids=p) for p in prompts_]
    for rnd in range(2):
        comps = eng.generate([t.prompt_ids + t.response_ids for t in trajs], params, [[]] * 3)
        for t, c in zip(trajs, comps):
            t.response_ids += c.token_ids
            t.action_mask += [1] * len(c.token_ids)
            t.old_logprobs += c.logprobs
            if rnd == 0:
                inj = TOK.encode("\n```output\n7\n```\n", add_special_tokens=False)
                t.response_ids += inj
                t.action_mask += [0] * len(inj)
                t.old_logprobs += [0.0] * len(inj)
    batch = collate(trajs, TOK.pad_token_id)
    with torch.no_grad():
        lp = token_logprobs(response_logits(tiny_qwen, batch), batch.response_ids, temperature=0.8)
    m = batch.action_mask.bool()
    torch.testing.assert_close(lp[m], batch.old_logprobs[m], atol=1e-4, rtol=0)


def test_engine_stop_strings_and_budgets(tiny_qwen):
    from zerotir.rollout.hf_engine import HFEngine

    eng = HFEngine(tiny_qwen, TOK)
    p = [TOK.encode("abc", add_special_tokens=False)] * 4
    comps = eng.generate(p, SamplingParams(temperature=1.0, seed=1), [[]] * 4, max_tokens=[1, 5, 9, 0])
    assert [len(c.token_ids) for c in comps][:3] == [1, 5, 9] or all(
        c.finish_reason == "eos" for c in comps[:3]
    )
    assert comps[3].token_ids == [] and comps[3].finish_reason == "length"
    # a stop string made of any single character stops on the first emitted token containing it
    comps = eng.generate(
        p[:1], SamplingParams(temperature=1.0, seed=2, max_new_tokens=50), [[chr(c) for c in range(32, 127)]]
    )
    assert comps[0].finish_reason in ("stop", "eos", "length")


def test_toy_model_end_to_end_with_stop_switch(local_sandbox):
    """The shipped toy model, nudged into a code answer, writes a block; the HF engine switches from
    the opening-fence stop to the closing one inside one call; the loop executes and injects."""
    from zerotir.models import load_causal_lm, load_tokenizer
    from zerotir.rollout.hf_engine import HFEngine

    tok = load_tokenizer("toy")
    eng = HFEngine(load_causal_lm("toy"), tok)
    t = get_template("toy-zerotir")
    exprs = ["123 * 45", "17 * 23 + 456", "5 * 7"]
    ps = [
        tok.encode(t.render(f"What is {e}?") + f" We compute {e} with Python.\n", add_special_tokens=False)
        for e in exprs
    ]
    c = eng.generate(
        ps[:1], SamplingParams(0.0, 1.0, 80), [[CODE_OPEN]], stop_switch={CODE_OPEN: [CODE_CLOSE]}
    )[0]
    text = tok.decode(c.token_ids)
    assert c.stop_str == CODE_CLOSE and text.startswith(CODE_OPEN) and text.rstrip().endswith(CODE_CLOSE)
    trajs = run_tool_rollout(
        eng,
        local_sandbox,
        ps,
        t,
        ToolLoopConfig(max_tool_calls=2, max_response_len=160),
        SamplingParams(0.0, 1.0, 160),
    )
    for tr in trajs:
        assert tr.tool_calls and tr.tool_calls[0].status == "ok"
        # the sandbox ran exactly the code the model wrote (the tiny model may mis-copy an operand)
        written = tr.tool_calls[0].code.strip()
        assert written.startswith("print(") and written in tr.text
        value = eval(written[len("print(") : -1])  # noqa: S307 - digits and + - * only
        assert tr.tool_calls[0].stdout.strip() == str(value)
        assert f"```output\n{value}\n```" in tr.text
        assert tok.decode(tr.response_ids) == tr.text


class _ShuffledSandbox:
    """Completes executions in a scrambled order and at scrambled times (a thread per call with a
    random short delay), so rows resume while others decode, pause or finish."""

    def __init__(self, inner, seed=0):
        import random

        self.inner, self.rng = inner, random.Random(seed)

    def submit(self, code, timeout_s=10.0, session=None):
        import concurrent.futures as cf
        import threading

        out, delay = cf.Future(), self.rng.random() * 0.05
        inner = self.inner.submit(code, timeout_s, session)

        def later():
            threading.Event().wait(delay)
            out.set_result(inner.result())

        threading.Thread(target=later, daemon=True).start()
        return out

    def run_batch_sync(self, codes, timeout_s=10.0, sessions=None):
        return self.inner.run_batch_sync(codes, timeout_s, sessions)


def _toy_code_prompts(tok, n):
    t = get_template("toy-zerotir")
    exprs = ["123 * 45", "17 * 23 + 456", "5 * 7", "88 + 12 * 3", "9 * 9 - 4", "1000 - 1", "64 * 2", "3 + 4"]
    return [
        tok.encode(t.render(f"What is {e}?") + f" We compute {e} with Python.\n", add_special_tokens=False)
        for e in exprs[:n]
    ], t


@pytest.mark.parametrize("max_calls,cap", [(2, 160), (1, 70)])
def test_interactive_rollout_equals_rounds(local_sandbox, max_calls, cap):
    """Greedy decoding: the one-loop scheduler (rows pause in the batch, resume with the output fed
    into their KV cache, in whatever order executions finish) yields exactly the trajectories of the
    round-based scheduler (re-prefill per round)."""
    from zerotir.models import load_causal_lm, load_tokenizer
    from zerotir.rollout.hf_engine import HFEngine

    tok = load_tokenizer("toy")
    eng = HFEngine(load_causal_lm("toy"), tok)
    ps, t = _toy_code_prompts(tok, 8)
    cfg = ToolLoopConfig(max_tool_calls=max_calls, max_response_len=cap)
    sp = SamplingParams(0.0, 1.0, cap)
    timings: dict = {}
    fast = run_tool_rollout(eng, _ShuffledSandbox(local_sandbox), ps, t, cfg, sp, timings)
    slow = run_tool_rollout(eng, local_sandbox, ps, t, replace(cfg, scheduler="rounds"), sp)
    assert sum(len(tr.tool_calls) for tr in fast) >= 6  # the comparison exercised pauses and resumes
    for a, b in zip(fast, slow):
        assert a.response_ids == b.response_ids and a.action_mask == b.action_mask
        assert a.finish_reason == b.finish_reason and a.text == b.text
        assert [c.stdout for c in a.tool_calls] == [c.stdout for c in b.tool_calls]
        torch.testing.assert_close(
            torch.tensor(a.old_logprobs), torch.tensor(b.old_logprobs), atol=1e-4, rtol=0
        )
        assert len(a.response_ids) <= cap
    assert timings["generate_s"] > 0 and timings["sandbox_s"] >= 0


def test_interactive_logprobs_match_trainer_recompute(local_sandbox):
    """Sampled (T=0.8, top-p 0.9) tool rollouts from the one-loop scheduler: the trainer's recomputed
    logprobs equal the engine's on every model token, across the injected outputs (fp32, 1e-4)."""
    from zerotir.models import load_causal_lm, load_tokenizer
    from zerotir.rollout.hf_engine import HFEngine
    from zerotir.train.batch import collate, response_logits, token_logprobs

    tok = load_tokenizer("toy")
    model = load_causal_lm("toy")
    ps, t = _toy_code_prompts(tok, 6)
    trajs = run_tool_rollout(
        HFEngine(model, tok),
        _ShuffledSandbox(local_sandbox, seed=1),
        ps,
        t,
        ToolLoopConfig(max_tool_calls=2, max_response_len=160),
        SamplingParams(0.8, 0.9, 160, seed=5),
    )
    assert any(0 in tr.action_mask for tr in trajs)
    batch = collate(trajs, tok.pad_token_id)
    with torch.no_grad():
        lp = token_logprobs(response_logits(model, batch), batch.response_ids, temperature=0.8)
    m = batch.action_mask.bool()
    torch.testing.assert_close(lp[m], batch.old_logprobs[m], atol=1e-4, rtol=0)


def test_sampled_rollout_is_the_same_however_fast_code_runs(local_sandbox):
    """Same seed, same sampled (T=1) rollouts when executions finish at other times: rows then pause
    and resume at other decode steps, and each row still draws from its own random stream. (With one
    generator for the batch, which rows sampled at a step decided what each row drew.)"""
    from zerotir.models import load_causal_lm, load_tokenizer
    from zerotir.rollout.hf_engine import HFEngine

    tok = load_tokenizer("toy")
    eng = HFEngine(load_causal_lm("toy"), tok)
    ps, t = _toy_code_prompts(tok, 8)
    cfg, sp = ToolLoopConfig(max_tool_calls=2, max_response_len=160), SamplingParams(1.0, 1.0, 160, seed=7)
    runs = [run_tool_rollout(eng, _ShuffledSandbox(local_sandbox, seed=s), ps, t, cfg, sp) for s in (1, 2, 3)]
    assert sum(len(tr.tool_calls) for tr in runs[0]) >= 4  # rows paused and resumed
    for other in runs[1:]:
        assert [tr.response_ids for tr in other] == [tr.response_ids for tr in runs[0]]
        assert [tr.action_mask for tr in other] == [tr.action_mask for tr in runs[0]]
    reseeded = run_tool_rollout(eng, local_sandbox, ps, t, cfg, replace(sp, seed=8))
    assert [tr.response_ids for tr in reseeded] != [tr.response_ids for tr in runs[0]]


def test_sample_next_inverts_each_rows_cdf():
    """Hand-computed: row 0 has probabilities .1 .2 .3 .4 (CDF .1 .3 .6 1), row 1 .5 0 .25 .25; a
    token with probability 0 is never taken; top-p 0.5 keeps {3, 2} of row 0 (.4 + .3, renormalised:
    3 below 4/7) and {0} of row 1."""
    from zerotir.rollout.hf_engine import sample_next

    lg = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.25, 0.25]]))
    cases = {0.0: ([0, 0], [3, 0]), 0.1: ([1, 0], [3, 0]), 0.3: ([2, 0], [3, 0]), 0.5: ([2, 2], [3, 0]),
             0.61: ([3, 2], [2, 0]), 1.0 - 1e-12: ([3, 3], [2, 0])}  # fmt: skip
    for u, (full, nucleus) in cases.items():
        us = torch.tensor([u, u], dtype=torch.float64)
        assert sample_next(lg, 1.0, 1.0, us)[0].tolist() == full, u
        assert sample_next(lg, 1.0, 0.5, us)[0].tolist() == nucleus, u
    tok, lp = sample_next(lg, 1.0, 1.0, torch.tensor([0.61, 0.61]))
    torch.testing.assert_close(lp, torch.log(torch.tensor([0.4, 0.25])))
    with pytest.raises(ValueError, match="uniform"):
        sample_next(lg, 1.0, 1.0, None)


class _FailingSubmits:
    """`submit` fails the first `fail_times` calls with an infrastructure error."""

    def __init__(self, inner, fail_times):
        self.inner, self.fail_times, self.calls = inner, fail_times, 0

    def submit(self, code, timeout_s=10.0, session=None):
        import concurrent.futures as cf

        self.calls += 1
        if self.calls <= self.fail_times:
            f = cf.Future()
            f.set_exception(SandboxInfraError("down"))
            return f
        return self.inner.submit(code, timeout_s, session)


def test_interactive_sandbox_failure_retried_then_excluded(local_sandbox):
    from zerotir.models import load_causal_lm, load_tokenizer
    from zerotir.rollout.hf_engine import HFEngine

    tok = load_tokenizer("toy")
    eng = HFEngine(load_causal_lm("toy"), tok)
    ps, t = _toy_code_prompts(tok, 2)
    cfg, sp = ToolLoopConfig(sandbox_retries=2, max_response_len=160), SamplingParams(0.0, 1.0, 160)
    trajs = run_tool_rollout(eng, _FailingSubmits(local_sandbox, 2), ps, t, cfg, sp)
    assert all(tr.tool_calls and not tr.excluded for tr in trajs)  # each failure was retried
    sb = _FailingSubmits(local_sandbox, 99)
    trajs = run_tool_rollout(eng, sb, ps, t, cfg, sp)
    assert sb.calls == 2 * 3  # first try + 2 retries per trajectory
    assert all(tr.excluded and tr.finish_reason == "sandbox_error" for tr in trajs)
    assert all("```output" not in tr.text and tr.tool_calls == [] for tr in trajs)


def test_scheduler_interactive_requires_support(local_sandbox):
    ps, t = prompts(1)
    with pytest.raises(ValueError, match="rollout.scheduler=interactive"):
        run_tool_rollout(
            ScriptedEngine(), local_sandbox, ps, t, ToolLoopConfig(scheduler="interactive"), SamplingParams()
        )


# ------------------------------------------------------------------ the fence grammar (rollout/tools.py)
FENCE_CASES = [
    ("```python\nprint(1)\n```", "print(1)\n"),
    ("```py\nprint(1)\n```\n", "print(1)\n"),
    ("```python3\nprint(1)\n```", "print(1)\n"),  # no stray `3` line
    ("```python  \nprint(1)\n```  \n", "print(1)\n"),
    ('```python\nprint("```")\n```', 'print("```")\n'),  # backticks in a string do not close
    ('```python\ns = "a```b"\nprint(s)\n```', 's = "a```b"\nprint(s)\n'),
    ("```python\nx = 1```\nprint(x)\n```", "x = 1"),  # a fence ending a line of complete code closes
    ("```python\nprint(6*7)```", "print(6*7)"),  # merged into the last line (BPE), as the paper runs it
    ('```python\nprint("```', None),  # stopped at a fence inside a string: not complete code, still open
    ('```python\nprint("```")\nx = 1 ```  \n', 'print("```")\nx = 1 '),
    ("```python\n```", ""),
    ("```pyx\nprint(1)\n```", None),  # other tags are text
    ("```pythonic\nprint(1)\n```", None),
    ("```python print(1)```", None),  # the tag's line must end
    ("```python\nprint(1)", None),  # unclosed
    ("```python\na = 1\n```\n````output\n```python\nfake\n```\n````\nok", "a = 1\n"),  # output skipped
    ("```python\na = 1\n```\n```output\n1\n```\n```python3\nb = 2\n```\n", "b = 2\n"),
]


@pytest.mark.parametrize("text,code", FENCE_CASES)
def test_fence_grammar(text, code):
    from zerotir.rollout.tools import PythonTool

    assert PythonTool().parse_call(text) == code


@pytest.mark.parametrize(
    "text,status",
    [
        ('```python\nprint("```', "open"),
        ("```python\nx = 1```", "closed"),  # complete code before a fence that ends the text so far
        ("```python\ns = (1,```", "open"),
        ("```python3\nx = 1\n```", "closed"),
        ("```python\nx = 1\n```\n", "closed"),
        ("```pyx\nx = 1\n```", "not_a_call"),
        ("```python\na\n```\n```output\n1\n```\nthen ```pyramid\n```", "not_a_call"),
    ],
)
def test_call_status_after_a_closing_stop(text, status):
    from zerotir.rollout.tools import PythonTool

    assert PythonTool().call_status(text) == status
    assert all(PythonTool().open == "```py" and tag.startswith("py") for tag in ("python", "py", "python3"))


class TapeEngine:
    """Writes one fixed model text, honouring each call's stop strings (stop included in the output),
    as a real engine would: a stop string is found wherever it occurs, even inside a string literal."""

    def __init__(self, script: str):
        self.tokenizer, self.script, self.pos, self.calls = TOK, script, 0, []

    def load_weights(self, sd, version=0):
        pass

    def generate(self, prompts, params, stops, max_tokens=None):
        rest = self.script[self.pos :]
        hits = [(rest.find(s) + len(s), s) for s in stops[0] if s in rest]
        end, stop = min(hits) if hits else (len(rest), None)
        self.pos += end
        self.calls.append(stop)
        ids = TOK.encode(rest[:end], add_special_tokens=False)
        return [Completion(ids + ([] if stop else [TOK.eos_token_id]), [-0.1] * (len(ids) + (not stop)),
                           "stop" if stop else "eos", stop)]  # fmt: skip


def test_tool_loop_keeps_generating_when_a_stop_is_not_a_real_close(local_sandbox):
    script = (
        'Compute.\n```python3\ns = "a```b"\nprint(s)\n```\nAnd:\n```pyx\nnot run\n```\n'
        '```py\nprint("```")\n```\nThe answer is \\boxed{1}.'
    )
    ps, t = prompts(1)
    eng = TapeEngine(script)
    tr = run_tool_rollout(eng, local_sandbox, ps, t, ToolLoopConfig(max_tool_calls=4, max_response_len=400),
                          SamplingParams(seed=0))[0]  # fmt: skip
    assert [c.stdout for c in tr.tool_calls] == ["a```b\n", "```\n"]
    assert all(c.status == "ok" for c in tr.tool_calls)
    assert (
        tr.finish_reason == "stop" and "```pyx\nnot run\n```\n```py" in tr.text and "\\boxed{1}." in tr.text
    )
    # the engine stopped at three backticks more often than blocks were closed: it was asked to go on
    assert eng.calls.count("```") > 2


def test_interactive_driver_continues_after_a_mid_line_fence():
    from zerotir.rollout.tool_loop import _State, _ToolDriver
    from zerotir.types import Trajectory

    t = get_template("toy-zerotir")
    st = _State(Trajectory(prompt_ids=[1]))
    drv = _ToolDriver(
        [st], None, t, ToolLoopConfig(max_tool_calls=2), TOK, {}, ToolLoopConfig().python_tool()
    )
    ids = lambda s: TOK.encode(s, add_special_tokens=False)  # noqa: E731
    assert drv.on_stop(0, "```py", ids("```py"), [0.0] * 5) == "continue"
    assert drv.stops(0) == ["```"]
    assert drv.on_stop(0, "```", ids('thon\nprint("```'), [0.0] * 14) == "continue"
    assert drv.stops(0) == ["```"] and not drv.pending
    assert drv.on_stop(0, "```", ids('")\n```'), [0.0] * 6) == "pause"
    assert drv.pending[0][1] == 'print("```")\n'


def test_stop_scan_cuts_at_the_token_that_completes_a_stop():
    """The engines' shared matcher: a stop split over tokens fires at the token that completes it,
    also when that token's piece runs past it; text before a reset is forgotten."""
    from zerotir.rollout.engine import StopScan

    pieces = {1: "``", 2: "`py", 3: "thon\n", 4: "x = 1\n``", 5: "`\n"}
    scan = StopScan(pieces.__getitem__, ["```py"])
    assert [scan.feed(t) for t in (1, 2)] == [None, "```py"]
    scan.reset(["```"])
    assert [scan.feed(t) for t in (3, 4, 5)] == [None, None, "```"]
    scan.reset(["```"])
    assert scan.feed(5) is None  # "``" before the reset does not combine with this "`"
    assert StopScan(pieces.__getitem__, []).feed(1) is None
