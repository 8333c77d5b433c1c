import json

import pytest

from zerotir.data import BENCHMARKS, DataError, load_benchmark, load_dataset_rows, read_jsonl
from zerotir.eval.metrics import maj_at_k, pass_at_k


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_bundled_benchmark_counts(name):
    rows = load_benchmark(name)
    assert len(rows) == BENCHMARKS[name][1]
    assert all(r["problem"] and r["answer"] for r in rows)


def test_malformed_line_reports_file_and_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": broken\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: malformed JSON"):
        read_jsonl(f)


def test_missing_answers_skip_or_error(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"q": "a", "a": "1"}) + "\n" + json.dumps({"q": "b"}) + "\n")
    rows = read_jsonl(f, "q", "a")
    assert [r["problem"] for r in rows] == ["a"]
    with pytest.raises(DataError, match=":2: row has no 'a'"):
        read_jsonl(f, "q", "a", missing_answer="error")
    with pytest.raises(DataError, match="pass --problem-key"):
        read_jsonl(f)


def test_a_wrong_answer_key_names_the_fields_and_a_cut_line_its_real_column(tmp_path):
    """A question/solution file with only problem_key set said "skipped 40 rows without an answer",
    then "no training rows"; an unclosed object was reported at column 1 (new-user review)."""
    f = tmp_path / "qs.jsonl"
    f.write_text(
        json.dumps({"question": "a", "solution": "1"})
        + "\n"
        + json.dumps({"question": "b", "solution": "2"})
        + "\n"
    )
    with pytest.raises(
        DataError, match=r"no 'answer' field in any row \(fields: \['question', 'solution'\]\)"
    ):
        read_jsonl(f, "question")
    assert [r["answer"] for r in read_jsonl(f, "question", "solution")] == ["1", "2"]
    cut = tmp_path / "cut.jsonl"
    cut.write_text('{"problem": "x", "answer": "1"\n')
    with pytest.raises(
        DataError, match=r"cut\.jsonl:1: malformed JSON \(Expecting ',' delimiter at column 31\)"
    ):
        read_jsonl(cut)


def test_unknown_source():
    with pytest.raises(DataError, match="not a bundled name"):
        load_dataset_rows("nope.jsonl")


def test_toy_source_splits_differ():
    tr = load_dataset_rows("toy", toy_size=50, toy_split="train")
    te = load_dataset_rows("toy", toy_size=50, toy_split="test")
    assert {r["problem"] for r in tr}.isdisjoint({r["problem"] for r in te}) or len(tr) == 50


def test_pass_at_k_hand_values():
    # n=4, c=1: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5; pass@4 = 1
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(5, 0, 3) == 0.0
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_maj_at_k_and_ties():
    assert maj_at_k(["1", "2", "2"], [True, False, False]) == 0.0
    assert maj_at_k(["1", "1", "2"], [True, True, False]) == 1.0
    # tie 1 vs 2: the first seen among the most frequent wins
    assert maj_at_k(["2", "1", "1", "2"], [False, True, True, False]) == 0.0
    assert maj_at_k([None, None, "3"], [False, False, True]) == 1.0
    assert maj_at_k([None], [False]) == 0.0


def test_parquet_loader(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"question": ["1+1", "2+2", "x"], "gold": ["2", "4", None]}), tmp_path / "d.parquet"
    )
    rows = load_dataset_rows(str(tmp_path / "d.parquet"), "question", "gold")
    assert [(r["problem"], r["answer"]) for r in rows] == [("1+1", "2"), ("2+2", "4")]
    with pytest.raises(DataError, match="row 2: row has no 'gold'"):
        load_dataset_rows(str(tmp_path / "d.parquet"), "question", "gold", missing_answer="error")


def test_hf_datasets_directory(tmp_path):
    import datasets  # a dev dependency: missing, this fails instead of skipping

    datasets.Dataset.from_dict({"problem": ["3*3"], "answer": ["9"]}).save_to_disk(str(tmp_path / "ds"))
    rows = load_dataset_rows(str(tmp_path / "ds"))
    assert rows[0]["problem"] == "3*3" and rows[0]["answer"] == "9"
    # a DatasetDict (save_to_disk of several splits): the first split, keys renamed as asked
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"q": ["1+1", "2+5"], "gold": ["2", None]})}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    rows = load_dataset_rows(str(tmp_path / "dd"), "q", "gold")
    assert [(r["problem"], r["answer"]) for r in rows] == [("1+1", "2")]
