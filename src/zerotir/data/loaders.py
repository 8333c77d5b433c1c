"""Datasets: bundled benchmarks, user files (JSON Lines, Parquet, HF `datasets` on disk) and the toy world.

Every row becomes `{"id", "problem", "answer", ...}`. A malformed line is reported with its file and
line number; rows without an answer are skipped (with a count) or rejected, as the caller chooses.
"""

from __future__ import annotations

import difflib
import json
import logging
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

TOY_CHAIN_SETS = {"toy-chain": "steps", "toy-double": "double"}
"""Held-out chain sets by name, and the chain style each holds (toy/world.py)."""
TOY_SOURCES = ("toy", *TOY_CHAIN_SETS)
"""The toy world's generated sets: its train stream / test split, and the held-out chain sets."""

BENCHMARKS = {
    "math500": ("math500.jsonl", 500),
    "aime24": ("aime24.jsonl", 30),
    "aime25": ("aime25.jsonl", 30),
    "amc23": ("amc23.jsonl", 40),
    "hmmt_feb24": ("hmmt_feb24.jsonl", 30),
    "hmmt_feb25": ("hmmt_feb25.jsonl", 30),
    "cmimc25": ("cmimc25.jsonl", 40),
    "olymmath": ("olymmath.jsonl", 200),
    "math_train": ("math_train_l3to5.jsonl", 8859),
}


class DataError(ValueError):
    """A dataset problem, with file and line where there is one."""


def _normalise(row: dict, idx: int, where: str, problem_key: str, answer_key: str) -> dict | None:
    if problem_key not in row:
        raise DataError(f"{where}: no {problem_key!r} field (fields: {sorted(row)}); pass --problem-key")
    ans = row.get(answer_key)
    if ans is None or (isinstance(ans, str) and not ans.strip()):
        return None
    out = dict(row)
    out["problem"] = str(row[problem_key])
    out["answer"] = str(ans)
    out.setdefault("id", str(row.get("id", idx)))
    return out


def _jsonl_records(path: Path):
    """(location, record) pairs of a JSON Lines file; a malformed line fails with file and line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip())  # with the newline, an unclosed object errs at "column 1"
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            yield f"{path}:{n}", row


def _collect(records, where: str, problem_key: str, answer_key: str, missing_answer: str) -> list[dict]:
    """Normalise (location, record) pairs; rows without an answer are skipped (counted) or rejected."""
    rows, skipped, keyed, first = [], 0, False, None
    for i, (loc, row) in enumerate(records):
        first = row if first is None else first
        keyed = keyed or answer_key in row
        r = _normalise(dict(row), i, loc, problem_key, answer_key)
        if r is None:
            if missing_answer == "error":
                raise DataError(f"{loc}: row has no {answer_key!r}")
            skipped += 1
            continue
        rows.append(r)
    if first is not None and not keyed:  # a wrong answer_key, not rows that lack an answer
        raise DataError(
            f"{where}: no {answer_key!r} field in any row (fields: {sorted(first)}); set data.answer_key (eval: --answer-key)"
        )
    if skipped:
        log.warning("%s: skipped %d rows without an answer", where, skipped)
    return rows


def read_jsonl(
    path: str | Path, problem_key: str = "problem", answer_key: str = "answer", missing_answer: str = "skip"
) -> list[dict]:
    path = Path(path)
    return _collect(_jsonl_records(path), str(path), problem_key, answer_key, missing_answer)


def _read_table(rows_iter, where: str, problem_key: str, answer_key: str, missing_answer: str) -> list[dict]:
    records = ((f"{where} row {i}", row) for i, row in enumerate(rows_iter))
    return _collect(records, where, problem_key, answer_key, missing_answer)


def load_benchmark(name: str) -> list[dict]:
    if name not in BENCHMARKS:
        raise DataError(f"unknown benchmark {name!r}; bundled: {', '.join(BENCHMARKS)}")
    fname, expected = BENCHMARKS[name]
    with resources.as_file(resources.files("zerotir.data") / "benchmarks" / fname) as p:
        rows = read_jsonl(p)
    if len(rows) != expected:
        raise DataError(f"bundled benchmark {name} has {len(rows)} rows, expected {expected}")
    return rows


def check_source(source: str) -> None:
    """Fail now (DataError) if `source` is neither `toy`, a bundled name, nor an existing file or
    directory of a readable kind: cheap, so commands call it before loading a model."""
    if source in TOY_SOURCES or source in BENCHMARKS:
        return
    p = Path(source).expanduser()
    if not p.exists():
        near = difflib.get_close_matches(source, [*TOY_SOURCES, *BENCHMARKS], n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise DataError(
            f"dataset {source!r}: no such file or directory, and not a bundled name{hint} "
            f"({', '.join(['toy', *BENCHMARKS])})"
        )
    if not (p.is_dir() or p.suffix in (".jsonl", ".json", ".parquet")):
        raise DataError(
            f"dataset {source!r}: unsupported format (use .jsonl, .parquet or a datasets directory)"
        )


def load_dataset_rows(
    source: str,
    problem_key: str = "problem",
    answer_key: str = "answer",
    missing_answer: str = "skip",
    toy_size: int = 4096,
    toy_easy_frac: float = 0.4,
    toy_split: str = "train",
    toy_chain_frac: float = 0.0,
    toy_chain_style: str = "steps",
) -> list[dict]:
    """Rows from `toy`, `toy-chain`, a bundled name, a .jsonl/.parquet file, or a
    `datasets.save_to_disk` directory."""
    if source in TOY_SOURCES:
        from zerotir.toy.world import chain_test_split, test_split, train_split

        if source in TOY_CHAIN_SETS:  # held-out chains: the same in every split
            probs = chain_test_split(toy_size, style=TOY_CHAIN_SETS[source])
        elif toy_split == "train":
            probs = train_split(
                toy_size, toy_easy_frac, chain_frac=toy_chain_frac, chain_style=toy_chain_style
            )
        else:
            probs = test_split(toy_size, toy_easy_frac)
        return [p.to_row() for p in probs]
    if source in BENCHMARKS:
        return load_benchmark(source)
    check_source(source)
    p = Path(source).expanduser()
    if p.suffix in (".jsonl", ".json"):
        return read_jsonl(p, problem_key, answer_key, missing_answer)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional dependency

        return _read_table(pq.read_table(p).to_pylist(), str(p), problem_key, answer_key, missing_answer)
    if p.is_dir():
        try:
            from datasets import load_from_disk
        except ImportError as e:
            raise DataError(f"{p} is a directory: reading HF datasets needs `pip install datasets`") from e
        ds = load_from_disk(str(p))
        if hasattr(ds, "keys"):
            ds = ds[next(iter(ds.keys()))]
        return _read_table(ds, str(p), problem_key, answer_key, missing_answer)
    raise DataError(f"dataset {source!r}: unsupported format (use .jsonl, .parquet or a datasets directory)")
