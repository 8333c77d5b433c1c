"""Prompts for real models: the paper's raw template, or the same instruction in a chat template.

ZeroTIR starts from base models, which get the raw text (`Question: ... Answer:` or the
Open-Reasoner-Zero conversation). An instruct/chat model was tuned on its own chat format; shown raw
text it is out of distribution and often never emits an end-of-turn token. With
`rollout.chat_template=on` (or `auto`, when the tokenizer has a chat template) the template's
instruction becomes the user message, the tokenizer's chat template renders it with the assistant
turn's generation prompt, and the template's response prefix (`<think>` for the ORZ templates)
follows. The raw cue that asks for the answer (`\\nAnswer:`, `\\nAssistant: <think>`) is dropped:
the generation prompt plays its part.

Generation stops at EOS and at every end-of-turn token the tokenizer knows (`stop_token_ids`), so
a chat model ends its turn with `<|im_end|>` / `<|eot_id|>` even when its EOS is another token.
"""

from __future__ import annotations

from typing import Any

from zerotir.rollout.protocol import Template
from zerotir.types import StrEnum


class ChatTemplateMode(StrEnum):
    AUTO = "auto"
    """The tokenizer's chat template when it has one (instruct models), else the raw template."""
    ON = "on"
    """Always the chat template (an error if the tokenizer has none)."""
    OFF = "off"
    """Always the raw template (the paper's setting for base models)."""


END_OF_TURN_TOKENS = (
    "<|im_end|>",  # ChatML: Qwen, SmolLM
    "<|eot_id|>",  # Llama 3
    "<|eom_id|>",  # Llama 3 tool turns
    "<|endoftext|>",  # GPT-2 family, Qwen base
    "<|end_of_text|>",  # Llama 3 base
    "<end_of_turn>",  # Gemma
    "<|end|>",  # Phi-3
    "</s>",  # Llama 2, Mistral
)
"""Tokens that end a turn in common chat formats; those in a tokenizer's vocabulary stop generation."""


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def uses_chat(tokenizer: Any, mode: ChatTemplateMode | str) -> bool:
    """Whether prompts go through the tokenizer's chat template under `mode`."""
    mode = ChatTemplateMode(mode)
    if mode is ChatTemplateMode.OFF:
        return False
    if has_chat_template(tokenizer):
        return True
    if mode is ChatTemplateMode.ON:
        raise ValueError(
            "rollout.chat_template=on but the tokenizer has no chat template (a base model?); "
            "use rollout.chat_template=auto or off"
        )
    return False


def render_prompt(template: Template, problem: str, tokenizer: Any, mode: ChatTemplateMode | str) -> str:
    """The prompt text for one problem (special tokens as text; encode with add_special_tokens=False)."""
    text = template.render(problem)
    if not uses_chat(tokenizer, mode):
        return text
    user = text.removesuffix(template.cue) if template.cue else text
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    return chat + template.response_prefix


def prompt_ids(template: Template, problem: str, tokenizer: Any, mode: ChatTemplateMode | str) -> list[int]:
    return tokenizer.encode(render_prompt(template, problem, tokenizer, mode), add_special_tokens=False)


def stop_token_ids(tokenizer: Any, extra: Any = None) -> set[int]:
    """EOS plus every end-of-turn token in the tokenizer's vocabulary (and `extra`: an id or ids, e.g.
    a model's `generation_config.eos_token_id`). Pad is not a stop unless it is one of these."""
    ids: set[int] = set()
    for x in (getattr(tokenizer, "eos_token_id", None), extra):
        if isinstance(x, int):
            ids.add(x)
        elif isinstance(x, (list, tuple, set)):
            ids.update(int(i) for i in x)
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return ids
