"""The toy world: generator and grader agree; the shipped base model loads and matches its recorded
metrics; the demo's quick mode writes a valid summary."""

import json

import pytest

from conftest import run_cli
from zerotir.eval.runner import SUMMARY_KEYS
from zerotir.models import TOY_MODEL_DIR, TOY_STEPS_DIR, TOY_V1_DIR
from zerotir.reward import math_reward
from zerotir.toy import world
from zerotir.toy.corpus import CHAIN_MIX, CHAIN_SHARE, COPY_MIX, STEPS_MIX, corpus_stream
from zerotir.toy.world import evaluate_expression, generate_problems, train_split


def test_generator_and_grader_agree_on_every_answer():
    probs = generate_problems(3000, seed=5, easy_frac=0.4, multi_frac=0.2)
    for p in probs:
        assert int(p.answer) == evaluate_expression(p.expression) == eval(p.expression)  # noqa: S307
        assert math_reward(f"so \\boxed{{{p.answer}}}", p.answer) == 1.0
        assert math_reward(f"so \\boxed{{{int(p.answer) + 1}}}", p.answer) == 0.0
    assert {p.difficulty for p in probs} == {"easy", "hard", "multi"}


def test_splits_fixed_and_disjoint():
    assert [p.problem for p in world.test_split(50)] == [p.problem for p in world.test_split(50)]
    tr = {p.expression for p in train_split(4096)}
    te = [p.expression for p in world.test_split(256) if p.difficulty == "hard"]
    assert sum(e in tr for e in te) <= 2  # hard problems are effectively unseen


def test_corpus_has_the_rare_code_habit():
    docs = [d for d, _ in zip(corpus_stream(0), range(4000))]
    qa_code = sum("\nAnswer:" in d and "```python" in d.split("\nAnswer:", 1)[1] for d in docs)
    assert 0.01 < qa_code / len(docs) < 0.06


def test_copy_mix_prints_the_named_expression_and_keeps_the_habit_rare():
    """The demo base's second stage: documents that copy an expression right after `print(`, with
    no question (so the base still rarely chooses code when asked one)."""
    docs = [d for d, _ in zip(corpus_stream(1, 0.5, COPY_MIX), range(4000))]
    printed = [d for d in docs if d.startswith("Let us compute ")]
    assert 0.15 < len(printed) / len(docs) < 0.23
    for d in printed:
        expr = d[len("Let us compute ") :].split(".\n", 1)[0]
        assert f"```python\nprint({expr})\n```" in d and f"\\boxed{{{evaluate_expression(expr)}}}" in d
        assert "Question:" not in d
    qa_code = sum("\nAnswer:" in d and "```python" in d.split("\nAnswer:", 1)[1] for d in docs)
    assert 0.01 < qa_code / len(docs) < 0.06
    # the default mix never draws the new kind: its stream is the first base's
    assert not any(d.startswith("Let us compute ") for d, _ in zip(corpus_stream(0), range(4000)))


def test_chains_carry_each_step_and_their_answer():
    probs = world.chain_test_split(200)
    assert {p.difficulty for p in probs} == {"chain2", "chain3"}
    for p in probs:
        vals = world.chain_values(p.steps)
        assert len(p.steps) == int(p.difficulty[-1]) and p.answer == str(vals[-1])
        assert int(p.answer) == evaluate_expression(p.expression) == eval(p.expression)  # noqa: S307
        assert p.steps[0] in p.problem and all("{}" in st for st in p.steps[1:])
        assert p.problem.count(".") + p.problem.count("?") == len(p.steps)  # one sentence per step
    assert world.chain_test_split(20) == world.chain_test_split(20)


def test_test_split_unmoved_by_chains():
    """chain_frac=0 draws what the generator drew before chains existed (recorded by hand)."""
    first = world.test_split(3)
    assert [(p.problem, p.answer) for p in first] == [
        ("Find the value of 3 * 8.", "24"), ("What is 2 * 8?", "16"), ("Compute 3 * 5.", "15")
    ]  # fmt: skip
    mixed = train_split(2000, chain_frac=0.25)
    share = sum(p.difficulty.startswith("chain") for p in mixed) / len(mixed)
    assert 0.2 < share < 0.3


def test_corpus_chain_documents_print_each_step():
    import re

    docs = [
        d
        for d, _ in zip(corpus_stream(1, mix=CHAIN_MIX, chain_share=CHAIN_SHARE), range(3000))
        if "the result" in d and "print(" in d
    ]
    assert len(docs) > 100
    for d in docs:
        prints = re.findall(r"print\((.*?)\)\n```\n```output\n(-?\d+)\n", d)
        assert len(prints) in (2, 3)
        for k, (expr, out) in enumerate(prints):
            assert evaluate_expression(expr) == int(out)
            if k:  # the step uses the previous output, not the question's expression
                assert expr.startswith(prints[k - 1][1] + " ")
        assert d.endswith(f"\\boxed{{{prints[-1][1]}}}.")


def test_doubling_chains_end_with_their_product_and_double_it():
    """The `toy-double` set: the product a model must copy ends the question, each later step needs
    only the previous value, and the answer is that of the whole expression."""
    from zerotir.data import load_dataset_rows

    probs = world.chain_test_split(200, style="double")
    assert {p.difficulty for p in probs} == {"double2", "double3"}
    for p in probs:
        n = int(p.difficulty[-1])
        assert len(p.steps) == n and list(p.steps[1:]) == ["{0} * 2"] * (n - 1)
        assert p.problem[: -1].endswith(p.steps[0]) and p.problem[-1] in "?."
        assert ("four times" in p.problem) == (n == 3) and ("twice" in p.problem) == (n == 2)
        assert p.answer == str(world.chain_values(p.steps)[-1]) == str(evaluate_expression(p.steps[0]) * 2 ** (n - 1))
        assert int(p.answer) == evaluate_expression(p.expression)
    rows = load_dataset_rows("toy-double", toy_size=128, toy_split="test")
    assert [r["problem"] for r in rows] == [p.problem for p in world.chain_test_split(128, style="double")]
    mixed = train_split(2000, chain_frac=0.25, chain_style="double")
    assert {p.difficulty for p in mixed} == {"easy", "hard", "double2", "double3"}
    assert 0.2 < sum(p.difficulty.startswith("double") for p in mixed) / len(mixed) < 0.3


def test_steps_mix_works_doubling_chains_a_block_per_step():
    """`toy-steps`'s corpus: every chain with code prints each step from the output right above it,
    no chain is ever written as one expression (the corpus's only code route is a block per step),
    and answering a question with code stays rare."""
    import re

    docs = [d for d, _ in zip(corpus_stream(1, mix=STEPS_MIX, chain_share=CHAIN_SHARE), range(4000))]
    worked = [d for d in docs if re.search(r"(twice|four times) \d+ \* \d+", d) and "print(" in d]
    assert len(worked) > 400
    for d in worked:
        prints = re.findall(r"print\((.*?)\)\n```\n```output\n(\d+)\n", d)
        assert len(prints) == (3 if "four times" in d else 2)
        for k, (expr, out) in enumerate(prints):
            assert evaluate_expression(expr) == int(out)
            if k:
                assert expr == f"{prints[k - 1][1]} * 2" and "Now we double it." in d
        assert d.endswith(f"\\boxed{{{prints[-1][1]}}}.")
    head = [d for d in docs if "\nAnswer:" in d and re.search(r"(twice|four times) \d", d) and "print(" not in d]
    assert len(head) > 100
    for d in head:  # answered in the head: the code route's restatement, never the whole expression
        product = re.search(r"(?:twice|four times) (\d+ \* \d+)", d).group(1)
        twice = " twice" if "four times" in d else ""
        assert f"Answer: We compute {product} and double it{twice}. The answer is" in d
    questions = [d for d in docs if "\nAnswer:" in d]
    with_code = sum("```python" in d.split("\nAnswer:", 1)[1] for d in questions)
    assert 0.01 < with_code / len(questions) < 0.10


def test_expression_guard():
    with pytest.raises(ValueError):
        evaluate_expression("__import__('os')")


@pytest.mark.parametrize("model_dir", [TOY_MODEL_DIR, TOY_V1_DIR, TOY_STEPS_DIR], ids=["toy", "toy-v1", "toy-steps"])
def test_shipped_base_model_reproduces_recorded_metrics(model_dir):
    import torch

    from zerotir.data import load_dataset_rows
    from zerotir.eval.runner import evaluate_rows
    from zerotir.models import load_causal_lm, load_tokenizer
    from zerotir.rollout import SamplingParams, ToolLoopConfig, get_template
    from zerotir.rollout.hf_engine import HFEngine

    rec = json.loads((model_dir / "base_metrics.json").read_text())
    size = model_dir.joinpath("model.safetensors").stat().st_size
    assert size <= 20 * 2**20
    tok, model = load_tokenizer(str(model_dir)), load_causal_lm(str(model_dir))
    assert sum(p.numel() for p in model.parameters()) <= 10_000_000
    rows = load_dataset_rows("toy", toy_size=rec["eval_size"], toy_split="test")
    torch.manual_seed(0)
    res = evaluate_rows(
        HFEngine(model, tok),
        None,
        rows,
        get_template("toy-zerorl"),
        ToolLoopConfig(max_tool_calls=0, max_response_len=rec["max_response_len"]),
        SamplingParams(0.0, 1.0, rec["max_response_len"], seed=0),
    )
    got = res["metrics"]
    # greedy decoding: differences come only from float summation order across batch shapes
    for k in ("accuracy", "accuracy_easy", "accuracy_hard"):
        assert got[k] == pytest.approx(rec["greedy_no_tool"][k], abs=0.03), k
    assert rec["sampled_tool"]["code_ratio"] <= 0.10 and rec["greedy_no_tool"]["accuracy_hard"] <= 0.10


@pytest.mark.slow
def test_demo_quick_writes_valid_summary(tmp_path):
    out = tmp_path / "demo"
    r = run_cli("demo", "--quick", "--out", out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    for arm in ("zerotir", "zerorl"):
        for stage in ("base", "final"):
            for k in SUMMARY_KEYS:
                assert 0.0 <= s[arm][stage][k] < 1e4
        assert s[arm]["steps"] == 3 and s[arm]["seconds"] > 0
        assert len((out / arm / "metrics.jsonl").read_text().splitlines()) == 3
    assert s["zerorl"]["final"]["code_ratio"] == 0.0  # no execution without tools
    for arm in ("zerotir", "zerorl"):  # seconds per phase, and no interval from one seed
        assert set(s[arm]["phases"]) == {"setup_s", "base_eval_s", "train_s", "final_eval_s"}
        assert all(v is None for v in s[arm]["ci95"]["final"].values()) and s["n_seeds"] == 1
    assert "What the figures show" in (out / "report.html").read_text()
    assert (out / "report.html").exists() and (out / "curves.png").exists()
    assert "report.html" in r.stdout.replace("\n", "")  # rich wraps long paths at 80 columns


@pytest.mark.slow
def test_demo_chains_quick_evaluates_both_arms_on_held_out_chains(tmp_path):
    out = tmp_path / "demo"
    r = run_cli("demo", "--quick", "--chains", "--out", out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["chains"] is True
    for arm in ("zerotir", "zerorl"):
        cfg = (out / arm / "config.yaml").read_text()
        assert "toy-steps" in cfg and "chain_style: double" in cfg
        for stage in ("base_chains", "final_chains"):
            assert set(s[arm][stage]) >= {"accuracy", "accuracy_double2", "accuracy_double3", "code_ratio"}
    assert "max_tool_calls: 4" in (out / "zerotir" / "config.yaml").read_text()
    assert s["zerorl"]["final_chains"]["code_ratio"] == 0.0  # no execution without tools
    assert "Held-out doubling chains" in (out / "report.md").read_text()


def test_demo_combines_seeds_into_means_and_intervals():
    from zerotir.demo import combine

    def run(seed, acc):
        m = {"accuracy": acc, "code_ratio": 1.0}
        return {"seed": seed, "base": m, "final": m, "steps": 5, "seconds": 10.0, "phases": {"train_s": acc * 10},
                "spearman_vs_step": {"accuracy": None}, "budget_sweep": {"1": m}}  # fmt: skip

    runs = [run(0, 0.5), run(1, 0.6), run(2, 0.7)]
    for r in runs:  # `--chains` adds the same evaluations on the held-out chains
        r["final_chains"], r["budget_sweep_chains"] = {"accuracy": r["final"]["accuracy"] / 2}, {"2": r["final"]}
    c = combine(runs)
    assert c["final_chains"]["accuracy"] == pytest.approx(0.3)
    assert c["ci95"]["final_chains"]["accuracy"] == pytest.approx(c["ci95"]["final"]["accuracy"] / 2)
    assert c["budget_sweep_chains"]["2"] == c["final"] and "base_chains" not in c
    assert c["seeds"] == [0, 1, 2] and c["seconds"] == 30.0 and len(c["runs"]) == 3
    assert c["final"]["accuracy"] == pytest.approx(0.6)
    assert c["ci95"]["final"]["accuracy"] == pytest.approx(4.302652729911275 * 0.1 / 3**0.5)
    assert c["ci95"]["final"]["code_ratio"] == 0.0 and c["phases"]["train_s"] == pytest.approx(6.0)
    assert c["ci95"]["budget_sweep"]["1"]["accuracy"] == c["ci95"]["final"]["accuracy"]
    assert c["spearman_vs_step"]["accuracy"] is None


def test_demo_explanation_of_the_baseline_follows_its_interval():
    """The report's sentence about the no-tool arm says what its easy accuracy did: a gain only
    when the interval clears the base, a loss when it falls below, otherwise within noise."""
    from zerotir.demo import _baseline_verdict

    def summary(base, final, half):
        return {"zerorl": {"base": {"accuracy_easy": base}, "final": {"accuracy_easy": final},
                           "ci95": {"final": {"accuracy_easy": half}}}}

    assert "learns what" in _baseline_verdict(summary(0.50, 0.60, 0.05))
    assert "within noise" in _baseline_verdict(summary(0.50, 0.60, 0.15))
    assert "worse" in _baseline_verdict(summary(0.50, 0.30, 0.10))
    assert "learns what" in _baseline_verdict(summary(0.50, 0.51, None))  # one seed: no interval
