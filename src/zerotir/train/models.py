"""Moved to `zerotir.models` (model loading is shared by rollout, eval and toy); kept for old imports."""

from zerotir.models import TOY_MODEL_DIR, ModelLoadError, load_causal_lm, load_tokenizer, resolve_model_path

__all__ = ["TOY_MODEL_DIR", "ModelLoadError", "load_causal_lm", "load_tokenizer", "resolve_model_path"]
