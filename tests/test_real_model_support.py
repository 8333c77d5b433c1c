"""What real models need, checked without one: chat-template prompts, end-of-turn stop tokens (HF and
vLLM request parameters), the per-turn context budget, the memory estimate, GGUF conversion errors.
The same paths on SmolLM2-135M are in tests/realmodel/."""

from __future__ import annotations

import sys
import types

import pytest

from conftest import run_cli
from zerotir.config import build_config
from zerotir.memory_estimate import GIB, KNOWN_ARCHS, Arch, estimate
from zerotir.rollout.chat import render_prompt, stop_token_ids, uses_chat
from zerotir.rollout.engine import SamplingParams
from zerotir.rollout.protocol import get_template
from zerotir.types import FinishReason


class ChatTok:
    """A tokenizer double with a ChatML chat template and a small vocabulary."""

    chat_template = "{chatml}"
    eos_token_id = 2

    def get_vocab(self):
        return {"<|im_end|>": 2, "<|endoftext|>": 0, "<|im_start|>": 1, "a": 5}

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False
        body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return body + ("<|im_start|>assistant\n" if add_generation_prompt else "")


class BaseTok(ChatTok):
    chat_template = None


@pytest.mark.unit
def test_chat_template_modes():
    t = get_template("zerotir")
    raw = t.render("1+1?")
    assert render_prompt(t, "1+1?", BaseTok(), "auto") == raw  # a base model: the paper's text
    assert render_prompt(t, "1+1?", ChatTok(), "off") == raw
    chat = render_prompt(t, "1+1?", ChatTok(), "auto")
    user = raw.removesuffix("\nAssistant: <think>")
    assert chat == f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n<think>"
    assert render_prompt(get_template("boxed-tir"), "x", ChatTok(), "on").endswith(
        "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="no chat template"):
        uses_chat(BaseTok(), "on")


@pytest.mark.unit
def test_stop_token_ids_cover_end_of_turn_tokens():
    assert stop_token_ids(ChatTok()) == {2, 0}
    assert stop_token_ids(ChatTok(), [7, 8]) == {0, 2, 7, 8}  # a model's generation_config ids


@pytest.mark.unit
def test_vllm_requests_carry_stop_token_ids(monkeypatch):
    """vLLM is not needed to check what we pass it: a stand-in `vllm.SamplingParams` records it."""
    from zerotir.rollout import vllm_engine

    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    sp = vllm_engine.request_params(SamplingParams(), ["```python"], 10, None, {2, 0})
    assert sp["stop_token_ids"] == [0, 2] and sp["stop"] == ["```python"]
    assert vllm_engine.request_params(SamplingParams(), [], 10, None)["stop_token_ids"] is None
    # ignore_eos samples the whole budget: end-of-turn ids must not stop it either (vLLM would)
    forced = SamplingParams(ignore_eos=True)
    assert vllm_engine.request_params(forced, [], 10, None, {2, 0})["stop_token_ids"] is None
    # vLLM reports a stop token's id as the stop reason: that ends the response like EOS
    assert vllm_engine.to_completion([5, 2], [-1.0, -0.5], "stop", 2).finish_reason == "eos"


@pytest.mark.integration
def test_context_window_caps_prompt_plus_response(tiny_model_dir, local_sandbox):
    from zerotir.models import load_causal_lm, load_tokenizer
    from zerotir.rollout.hf_engine import HFEngine
    from zerotir.rollout.metrics import rollout_metrics
    from zerotir.rollout.tool_loop import ToolLoopConfig, run_tool_rollout

    tok = load_tokenizer(tiny_model_dir)
    engine = HFEngine(load_causal_lm(tiny_model_dir), tok)
    t = get_template("toy-zerotir")
    short, long = (tok.encode(t.render(p), add_special_tokens=False) for p in ("1+1", "1+1" * 20))
    window = len(long) + 4
    cfg = ToolLoopConfig(max_response_len=30, max_context_len=window)
    params = SamplingParams(1.0, 1.0, 30, seed=0, ignore_eos=True)
    a, b, c = run_tool_rollout(engine, local_sandbox, [short, long, long + [5] * 10], t, cfg, params)
    assert len(a.response_ids) == 30 and not a.meta["context_limited"]  # the response budget binds
    assert len(b.prompt_ids) + len(b.response_ids) == window and b.meta["context_limited"]
    assert b.finish_reason == FinishReason.LENGTH
    assert c.response_ids == [] and c.finish_reason == FinishReason.LENGTH  # the prompt alone overflows
    assert rollout_metrics([a, b, c])["rollout/context_limited_ratio"] == pytest.approx(2 / 3)


@pytest.mark.unit
def test_memory_estimate_by_hand():
    # hidden 64, 2 layers, MLP 128, 4 heads (head dim 16), 2 KV heads (kv dim 32), vocab 100, untied:
    # attention 2*64*64 + 2*64*32 = 12288, MLP 3*64*128 = 24576, norms 128 -> 36992 a layer;
    # backbone 100*64 + 2*36992 + 64 = 80448; LM head 6400 -> 86848 parameters.
    arch = Arch(64, 2, 128, 4, 2, 100, tie_embeddings=False)
    assert arch.backbone_params() == 80448 and arch.params() == 86848
    cfg = build_config(
        overrides=["model.dtype=bfloat16", "algo.name=ppo", "algo.critic_lr=1e-6", "algo.critic_steps=1"]
    )
    e1 = estimate(cfg, 1, arch)
    p, c = 86848, 80448 + 64 + 1
    assert e1.rows["policy weights"] == 2 * p and e1.rows["policy AdamW moments"] == 4 * p
    assert e1.rows["critic weights"] == 2 * c and "reference weights" not in e1.rows
    assert e1.total == 2 * p * 4 + 2 * c * 4
    e4 = estimate(cfg, 4, arch)
    assert e4.rows["policy gradients"] == 2 * p // 4
    # The shipped presets' models: the published parameter counts.
    assert round(KNOWN_ARCHS["Qwen/Qwen2.5-1.5B"].params() / 1e9, 2) == 1.54
    assert round(KNOWN_ARCHS["Qwen/Qwen2.5-7B"].params() / 1e9, 2) == 7.62
    e7 = estimate(build_config("qwen2.5-7b-zerotir"), 8)
    assert e7.rows["policy weights"] / GIB == pytest.approx(7615616512 * 2 / 8 / GIB)


@pytest.mark.integration
def test_estimate_memory_cli_and_gguf_errors(tmp_path, monkeypatch):
    out = run_cli("train", "--preset", "qwen2.5-1.5b-zerotir", "--estimate-memory", "--gpus", "1,8")
    assert out.returncode == 0, out.stderr
    assert "1.54B parameters" in out.stdout and "FSDP2 x8" in out.stdout
    missing = run_cli("convert-gguf", tmp_path / "none.gguf", tmp_path / "out")
    assert missing.returncode == 2 and "not found" in missing.stderr
    from zerotir import gguf
    from zerotir.errors import ModelLoadError

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"pip install 'zerotir\[realmodel\]'"):
        gguf.convert_gguf(f, tmp_path / "out")


def test_partial_rollouts_keep_the_engines_context_window(tiny_model_dir, local_sandbox):
    """Under `distributed.partial_rollouts` the tool loop talks to a ChunkedEngine, which stated no
    window: only `max_response_len` bound, and prompt + response could outgrow the model's context
    (vLLM refuses such a request). It passes the inner engine's window on."""
    from zerotir.distributed.chunked import ChunkedEngine
    from zerotir.models import load_causal_lm, load_tokenizer
    from zerotir.rollout.hf_engine import HFEngine
    from zerotir.rollout.tool_loop import ToolLoopConfig, run_tool_rollout

    tok = load_tokenizer(tiny_model_dir)
    inner = HFEngine(load_causal_lm(tiny_model_dir), tok)
    t = get_template("toy-zerotir")
    prompt = tok.encode(t.render("1+1" * 20), add_special_tokens=False)
    inner.max_model_len = len(prompt) + 4  # as a vLLM engine states its window
    engine = ChunkedEngine(inner, chunk=3, refresh=lambda: 0)
    params = SamplingParams(1.0, 1.0, 30, seed=0, ignore_eos=True)
    (tr,) = run_tool_rollout(engine, local_sandbox, [prompt], t, ToolLoopConfig(max_response_len=30), params)
    assert len(tr.prompt_ids) + len(tr.response_ids) == len(prompt) + 4 and tr.meta["context_limited"]
