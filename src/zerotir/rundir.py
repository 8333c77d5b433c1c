"""Run directories that are never silently reused.

Training into a directory that already holds a run interleaves two runs' metrics (steps
0,1,2,3,0,1), leaves the old checkpoints next to the new ones, and a later `--resume` continues the
*old* run. So a new run needs an empty (or absent) directory; `--resume` continues the run that is
there; `--overwrite` moves the old run aside to `<dir>.old-<timestamp>` (nothing is deleted).
"""

from __future__ import annotations

import time
from pathlib import Path

from zerotir.errors import UsageError


def is_used(run_dir: Path) -> bool:
    """True if `run_dir` exists and has anything in it."""
    return run_dir.is_dir() and any(run_dir.iterdir())


def _stamped(base: Path, sep: str) -> Path:
    """`<base><sep><timestamp>` that does not exist yet (a counter breaks ties within a second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cand = base.with_name(f"{base.name}{sep}{stamp}")
    k = 1
    while cand.exists():
        cand = base.with_name(f"{base.name}{sep}{stamp}-{k}")
        k += 1
    return cand


def move_aside(run_dir: Path) -> Path:
    """Rename a used run directory to `<dir>.old-<timestamp>`; returns the new path."""
    dest = _stamped(run_dir, ".old-")
    run_dir.rename(dest)
    return dest


def prepare_new_run(
    run_dir: str | Path, overwrite: bool = False, command: str = "zerotir train"
) -> Path | None:
    """Make `run_dir` ready for a fresh run. A used one is refused (UsageError naming both ways
    out) unless `overwrite`, which moves it aside; returns where the old run went, or None."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} is a file")
    if not is_used(run_dir):
        return None
    if not overwrite:
        hint = f"continue it with `zerotir train --resume {run_dir}`, " if command == "zerotir train" else ""
        raise UsageError(
            f"{run_dir} already holds a run; {hint}pass --overwrite to move it aside "
            f"(to {run_dir}.old-<time>), or choose another directory"
        )
    return move_aside(run_dir)


def fresh_default(base: str | Path) -> Path:
    """`base` if unused, else `<base>-<timestamp>`: a default output that never lands in an old run."""
    base = Path(base)
    return _stamped(base, "-") if is_used(base) else base
