"""Tool-integrated rollouts on a real model with a real BPE tokenizer and chat template (SmolLM2-135M).

The scripted tests force the sampled tokens (the real model still runs, so the logprobs are its
own): fences split across and merged with neighbouring tokens (' ```', ')`' + '``', '`' + '``.'),
which a token-level or `endswith` stop check misses. Everything else samples freely."""

from __future__ import annotations

import pytest
import torch

import zerotir.rollout.hf_engine as hf_engine
from zerotir.rollout.chat import ChatTemplateMode, prompt_ids, render_prompt, stop_token_ids
from zerotir.rollout.engine import SamplingParams
from zerotir.rollout.hf_engine import HFEngine
from zerotir.rollout.protocol import get_template, wrap_output
from zerotir.rollout.tool_loop import ToolLoopConfig, run_tool_rollout
from zerotir.task import MathTask
from zerotir.train.batch import batched_logprobs, collate
from zerotir.types import FinishReason

pytestmark = [pytest.mark.realmodel, pytest.mark.integration]

BOXED_TIR = get_template("boxed-tir")
LOGPROB_TOL = 1e-4
"""Engine (KV-cache decode, injected output prefilled into the cache) vs trainer (one full forward), fp32."""


def ids_of(tok, pieces: list[str]) -> list[int]:
    """Token ids for exactly these tokens (each piece must be one token of the vocabulary); a merged
    piece the canonical encoding would split is looked up by its string."""
    by_text = {tok.convert_tokens_to_string([t]): i for t, i in tok.get_vocab().items()}
    missing = [p for p in pieces if p not in by_text]
    assert not missing, f"not single tokens of this vocabulary: {missing}"
    return [by_text[p] for p in pieces]


class ScriptedSampler:
    """Replaces `sample_next` for one row: returns the scripted token, with the model's own logprob."""

    def __init__(self, ids: list[int]):
        self.ids, self.k = ids, 0

    def __call__(self, logits, temperature, top_p, uniforms):
        assert logits.shape[0] == 1, "one row at a time"
        t = torch.tensor([self.ids[self.k]])
        self.k += 1
        logp = torch.log_softmax(logits.float() / (temperature if temperature > 0 else 1.0), dim=-1)
        return t, logp.gather(-1, t[:, None]).squeeze(-1)


def assert_token_exact(traj, tok, model):
    """decode(ids) == text; engine logprobs == trainer logprobs on model tokens; 0 on injected ones."""
    assert tok.decode(traj.response_ids) == traj.text
    assert len(traj.response_ids) == len(traj.action_mask) == len(traj.rollout_logprobs)
    batch = collate([traj], tok.pad_token_id)
    trainer_lp = batched_logprobs(model, batch, 1, 1.0)[0, : len(traj.response_ids)]
    mask = torch.tensor(traj.action_mask, dtype=torch.bool)
    engine_lp = torch.tensor(traj.rollout_logprobs)
    assert (engine_lp[~mask] == 0).all()
    diff = (engine_lp[mask] - trainer_lp[mask]).abs().max().item()
    assert diff < LOGPROB_TOL, f"engine vs trainer logprobs differ by {diff:.2e}"


SCRIPTS = {
    # ' ```' (space merged into the opening fence), ')`' + '``' (the closing fence split and merged)
    "space-fence, paren-merged close": (
        ["Let", " me", " check", " ```", "python", "\n", "print", "(", "6", "*", "7", ")`", "``"],
        ["So", " the", " answer", " is", " \\", "box", "ed", "{", "4", "2", "}.", "<|im_end|>"],
        1.0,
    ),
    # '`' + '``.' : the closing fence merged with the period after it ("```.")
    "close merged with period": (
        ["Compute", ":", "```", "python", "\n", "print", "(", "6", "*", "7", ")", "\n", "`", "``."],
        [" \\", "box", "ed", "{", "4", "2", "}", "<|im_end|>"],
        1.0,
    ),
    # the answer only in the executed code's output: not the model's tokens, so no reward by default
    "answer only printed": (
        ["```", "python", "\n", "print", "('", "\\\\", "box", "ed", "{", "4", "2", "}')", "\n", "```"],
        ["Done", ".", "<|im_end|>"],
        0.0,
    ),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_fences_under_bpe_merges_and_exact_mask(smollm, local_sandbox, monkeypatch, name):
    model, tok = smollm
    before, after, reward = SCRIPTS[name]
    seg1, seg2 = ids_of(tok, before), ids_of(tok, after)
    monkeypatch.setattr(hf_engine, "sample_next", ScriptedSampler(seg1 + seg2))
    prompt = prompt_ids(BOXED_TIR, "What is 6*7?", tok, "on")
    cfg = ToolLoopConfig(max_tool_calls=1, max_response_len=200)
    (tr,) = run_tool_rollout(
        HFEngine(model, tok), local_sandbox, [prompt], BOXED_TIR, cfg, SamplingParams(1.0, 1.0, 200, 0)
    )

    assert len(tr.tool_calls) == 1, (tr.text, tr.finish_reason)
    assert tr.tool_calls[0].status == "ok" and tr.tool_calls[0].stdout.strip() in ("42", "\\boxed{42}")
    # budget 1, one call: no notice (it answers only a block written past the budget)
    injected = tok.encode(wrap_output(tr.tool_calls[0].output), add_special_tokens=False)
    # Mask exact: model ids verbatim (mask 1), then exactly the injected block (mask 0), then the model.
    n1 = len(seg1)
    assert tr.response_ids == seg1 + injected + seg2
    assert tr.action_mask == [1] * n1 + [0] * len(injected) + [1] * len(seg2)
    assert tr.finish_reason == FinishReason.MAX_TOOL_CALLS  # ended by <|im_end|> after the last call
    assert_token_exact(tr, tok, model)
    tr.answer = "42"
    assert MathTask(BOXED_TIR, tok).score(tr) == reward


def test_free_sampling_is_token_exact(smollm, local_sandbox):
    model, tok = smollm
    prompts = [prompt_ids(BOXED_TIR, p, tok, "on") for p in ("What is 2+3?", "Compute 7*8 with Python.")]
    cfg = ToolLoopConfig(max_tool_calls=2, max_response_len=40)
    trajs = run_tool_rollout(
        HFEngine(model, tok), local_sandbox, prompts, BOXED_TIR, cfg, SamplingParams(1.0, 1.0, 40, 3)
    )
    for tr in trajs:
        assert len(tr.response_ids) <= 40
        assert_token_exact(tr, tok, model)


def test_chat_template_and_end_of_turn(smollm):
    model, tok = smollm
    raw = render_prompt(BOXED_TIR, "What is 1+1?", tok, "off")
    chat = render_prompt(BOXED_TIR, "What is 1+1?", tok, ChatTemplateMode.AUTO)  # SmolLM2 has a template
    assert raw == BOXED_TIR.render("What is 1+1?") and raw.endswith("\nAnswer:")
    assert chat.endswith("<|im_start|>assistant\n") and "\nAnswer:" not in chat
    assert BOXED_TIR.render("What is 1+1?").removesuffix("\nAnswer:") in chat
    ids = prompt_ids(BOXED_TIR, "What is 1+1?", tok, "on")
    assert tok.convert_tokens_to_ids("<|im_start|>") in ids  # the special tokens, not their characters
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok)
    assert tok.convert_tokens_to_ids("<|endoftext|>") in HFEngine(model, tok).eos_ids


def test_context_window_finishes_as_length(smollm, local_sandbox):
    model, tok = smollm
    prompt = prompt_ids(BOXED_TIR, "What is 2+3?", tok, "on")
    cfg = ToolLoopConfig(max_tool_calls=2, max_response_len=64, max_context_len=len(prompt) + 6)
    (tr,) = run_tool_rollout(
        HFEngine(model, tok), local_sandbox, [prompt], BOXED_TIR, cfg, SamplingParams(0.0, 1.0, 64, 1)
    )
    assert len(tr.prompt_ids) + len(tr.response_ids) <= cfg.max_context_len
    assert tr.finish_reason == FinishReason.LENGTH and tr.meta["context_limited"]
    assert len(tr.response_ids) == 6
    # The model's own window (8192 for SmolLM2) is the default bound.
    from zerotir.rollout.tool_loop import context_window

    assert context_window(HFEngine(model, tok), ToolLoopConfig()) == model.config.max_position_embeddings
