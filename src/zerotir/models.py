"""Loading policies and tokenizers from local directories (or hub names when online); shared by
training, rollout engines, evaluation and the toy world, so it lives below all of them.

Why a wrapper: a missing path or an unreadable checkpoint must fail with a message that says what
was looked for and how to fix it, not with a hub 404 three frames deep in transformers.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from zerotir.errors import ModelLoadError  # also importable from here, as before

TOY_MODEL_DIR = Path(__file__).resolve().parent / "toy" / "base_model"
"""The demo's base (`toy`): `toy-v1` pre-trained 200 steps further on the copy mix (toy/corpus.py)."""
TOY_V1_DIR = Path(__file__).resolve().parent / "toy" / "base_model_v1"
"""The first shipped base (`toy-v1`): kept because the redesign's same-seed baseline was recorded on it."""
TOY_STEPS_DIR = Path(__file__).resolve().parent / "toy" / "base_model_steps"
"""`toy-steps`, the base of `zerotir demo --chains`: `toy` pre-trained 500 steps further on the steps mix."""


def resolve_model_path(name_or_path: str) -> str:
    """Map the aliases `toy` (and `toy-v1`, `toy-steps`) to the shipped weights; check local paths exist."""
    if name_or_path == "toy-v1":
        return str(TOY_V1_DIR)
    if name_or_path == "toy-steps":
        return str(TOY_STEPS_DIR)
    if name_or_path in ("toy", "toy-base"):
        if not (TOY_MODEL_DIR / "config.json").exists():
            raise ModelLoadError(
                f"the shipped toy base model is missing at {TOY_MODEL_DIR}; "
                "rebuild it with `zerotir toy pretrain --out " + str(TOY_MODEL_DIR) + "`"
            )
        return str(TOY_MODEL_DIR)
    p = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or p.exists()
    if looks_local and not (p / "config.json").exists():
        raise ModelLoadError(
            f"model path {str(p)!r} has no config.json (exists: {p.exists()}); pass a directory saved with "
            "save_pretrained(), a hub name such as Qwen/Qwen2.5-1.5B, or `toy`"
        )
    return str(p) if looks_local else name_or_path


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    path = resolve_model_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load a tokenizer from {path!r}: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""`model.dtype` names -> torch dtypes."""


def _load(auto_cls, what: str, name_or_path: str, dtype: str, device: str) -> torch.nn.Module:
    path = resolve_model_path(name_or_path)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        AutoConfig.from_pretrained(path)
        model = auto_cls.from_pretrained(path, dtype=DTYPES[dtype])
    except (OSError, ValueError) as e:
        hint = " (HF_HUB_OFFLINE=1 is set: only local directories work)" if offline else ""
        raise ModelLoadError(f"could not load {what} from {path!r}{hint}: {e}") from e
    return model.to(device)


def load_causal_lm(name_or_path: str, dtype: str = "float32", device: str = "cpu") -> torch.nn.Module:
    """The policy (or reference): a causal LM in `dtype` on `device`."""
    return _load(AutoModelForCausalLM, "a causal LM", name_or_path, dtype, device)


def load_backbone(name_or_path: str, dtype: str = "float32", device: str = "cpu") -> torch.nn.Module:
    """The transformer body without its LM head (the PPO critic's), in `dtype` on `device`: always an
    explicit dtype, since transformers otherwise keeps the checkpoint's (bf16 for Qwen2.5) while the
    value head on top is built in ours."""
    return _load(AutoModel, "a transformer body", name_or_path, dtype, device)
