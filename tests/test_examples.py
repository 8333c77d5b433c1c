"""The one-file example runs end to end (two small steps) with the package's own parts."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "minimal_grpo.py"


@pytest.mark.integration
def test_minimal_grpo_runs_two_steps():
    spec = importlib.util.spec_from_file_location("minimal_grpo", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    hist = mod.main(["--steps", "2", "--prompts", "2", "--group", "4", "--max-len", "64"])
    assert [h["step"] for h in hist] == [0, 1]
    for h in hist:
        assert 0.0 <= h["reward"] <= 1.0 and 0.0 <= h["code_ratio"] <= 1.0
        assert h["grad_norm"] >= 0.0 and h["entropy"] > 0.0
    assert hist[0]["ratio_max"] == pytest.approx(1.0, abs=1e-3)  # behaviour policy = trained module at step 0
