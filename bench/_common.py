"""Shared helpers for benchmarks: the run config they build from, machine details and result files.

Every benchmark builds its engine, sandbox, pool, task and data through `zerotir.build` from a
`RunConfig` (`bench_config`), so it measures what a run with that config would run, and takes
trailing `key.sub=value` overrides like `zerotir train`. Only the baselines a benchmark compares
against (a bare `subprocess.run`, a bare forked child, TRL) are built by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from zerotir.config import RunConfig, build_config

RESULTS = Path(os.environ.get("ZEROTIR_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
"""Where result files go (`ZEROTIR_BENCH_RESULTS` redirects them: the smoke tests write to a temporary directory)."""


def add_config_args(ap: argparse.ArgumentParser) -> None:
    """Trailing `key.sub=value` overrides of the benchmark's run config."""
    ap.add_argument("overrides", nargs="*", help="config overrides applied last, key.sub=value")


def bench_config(preset: str | None, fixed: list[str], overrides: list[str] | None = None) -> RunConfig:
    """The benchmark's run config: the preset, then its own settings, then the user's overrides."""
    return build_config(preset, overrides=[*fixed, *(overrides or [])])


def machine() -> dict:
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        info["cpu_model"] = next(
            ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    try:
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        info["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        pass
    return info


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2))
    return path
