"""Datasets: bundled math benchmarks, user files and the toy world."""

from zerotir.data.loaders import (
    BENCHMARKS,
    DataError,
    check_source,
    load_benchmark,
    load_dataset_rows,
    read_jsonl,
)

__all__ = ["BENCHMARKS", "DataError", "check_source", "load_benchmark", "load_dataset_rows", "read_jsonl"]
