"""Evaluation: a scripted engine with known accuracy, the full CLI path on a tiny random model with
tools on MATH500, the grader audit, and clear errors on bad input."""

import json

import pytest

from conftest import run_cli
from zerotir.eval.runner import evaluate_rows
from zerotir.rollout import SamplingParams, ToolLoopConfig, get_template
from zerotir.rollout.engine import Completion
from zerotir.toy.tokenizer import build_byte_tokenizer

TOK = build_byte_tokenizer()


class KnownAccuracyEngine:
    """Answers problem i correctly iff i is even; sample j of an odd problem is right when j == 0."""

    tokenizer = TOK

    def __init__(self):
        self.seen: dict[str, int] = {}

    def load_weights(self, sd, version=0):
        pass

    def generate(self, prompts, params, stops, max_tokens=None):
        out = []
        for p in prompts:
            text = TOK.decode(p)
            i = int(text.split("Problem number ")[1].split(".")[0])
            j = self.seen.get(text, 0)
            self.seen[text] = j + 1
            ans = i if (i % 2 == 0 or j == 0) else i + 100
            ids = TOK.encode(f"The answer is \\boxed{{{ans}}}.", add_special_tokens=False) + [
                TOK.eos_token_id
            ]
            out.append(Completion(ids, [-0.1] * len(ids), "eos"))
        return out


def test_known_accuracies_and_estimators():
    rows = [{"id": str(i), "problem": f"Problem number {i}.", "answer": str(i)} for i in range(10)]
    res = evaluate_rows(
        KnownAccuracyEngine(),
        None,
        rows,
        get_template("boxed"),
        ToolLoopConfig(max_tool_calls=0),
        SamplingParams(1.0, 1.0, 32),
        n=4,
        batch_size=7,
    )
    m = res["metrics"]
    # even problems: 4/4; odd problems: 1/4 -> avg@4 = (5*1 + 5*0.25)/10
    assert m["accuracy"] == pytest.approx(0.625)
    assert m["pass@1"] == pytest.approx(0.625)
    assert m["pass@4"] == pytest.approx(1.0)
    assert m["max@4"] == 1.0
    assert m["maj@4"] == pytest.approx(0.5)  # odd problems: the wrong answer wins 3-1
    assert m["code_ratio"] == 0.0 and len(res["samples"]) == 40


@pytest.mark.slow
def test_cli_eval_tiny_model_math500_with_tools(tiny_model_dir, tmp_path):
    out = tmp_path / "ev"
    r = run_cli(
        "eval",
        "--model",
        tiny_model_dir,
        "--benchmarks",
        "math500",
        "--limit",
        "5",
        "--max-tokens",
        "24",
        "--max-tool-calls",
        "1,2",
        "--n",
        "2",
        "--temperature",
        "1.0",
        "--out",
        out,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    s = res["settings"]
    assert (s["n"], s["temperature"], s["budgets"], s["seed"], s["max_tokens"]) == (2, 1.0, [1, 2], 42, 24)
    assert "math-verify" in s["grader"]
    for b in ("1", "2"):
        m = res["benchmarks"]["math500"][b]
        assert m["problems"] == 5 and 0.0 <= m["accuracy"] <= 1.0 and "pass@2" in m
    assert (out / "results.md").read_text().count("|") > 10
    assert len((out / "samples_math500_calls1.jsonl").read_text().splitlines()) == 10


def test_grader_audit_math500():
    from zerotir.eval.benchmark import audit_grader

    rep = audit_grader(["math500"])["math500"]
    assert rep["checks"] >= 1000
    assert rep["false_negative_rate"] <= 0.005


def test_cli_eval_bad_inputs(tmp_path, tiny_model_dir):
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"problem": "x", "answer": "1"}\nnot json\n')
    r = run_cli("eval", "--model", tmp_path / "missing", "--benchmarks", "math500")
    assert r.returncode == 2 and "no config.json" in r.stderr
    r = run_cli("eval", "--model", tiny_model_dir, "--benchmarks", bad, "--out", tmp_path / "o", timeout=300)
    assert r.returncode == 2 and "b.jsonl:2: malformed JSON" in r.stderr
