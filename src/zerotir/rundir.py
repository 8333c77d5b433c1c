"""Run directories that are never silently reused.

Training into a directory that already holds a run interleaves two runs' metrics (steps
0,1,2,3,0,1), leaves the old checkpoints next to the new ones, and a later `--resume` continues the
*old* run. So a new run needs an empty (or absent) directory; `--resume` continues the run that is
there; `--overwrite` moves the old run aside to `<dir>.old-<timestamp>` (nothing is deleted).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

from zerotir.errors import UsageError

LOCK_FILE = ".lock"
"""In a run directory: the advisory lock of the process writing the run (its pid inside)."""
_held: dict[Path, IO[str]] = {}


def is_used(run_dir: Path) -> bool:
    """True if `run_dir` exists and has anything in it but the lock file (a start that failed before
    writing anything, a missing model say, leaves only that: the fixed command must not be refused)."""
    return run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir())


def discard_if_unused(run_dir: str | Path) -> None:
    """Remove `run_dir` if it holds nothing but this process's lock file: a command that failed
    before writing anything leaves no empty run directory behind. Anything else in it is kept, and so
    is a lock another process holds (the failure may have been finding it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or is_used(run_dir):
        return
    f = _held.pop(run_dir.resolve(), None)
    if f is not None:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
        f.close()
    elif (run_dir / LOCK_FILE).exists():
        return
    try:
        run_dir.rmdir()
    except OSError:  # something appeared meanwhile: it stays
        pass


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


def _holder(lock: IO[str]) -> str:
    """The `pid N` line the holder of `lock` wrote."""
    lock.seek(0)
    return lock.read().strip() or "another process"


def _in_use_message(run_dir: Path, holder: str) -> str:
    return (
        f"{run_dir} is in use by {holder}: two runs writing one directory corrupt each other; "
        "wait for it to end, or choose another directory"
    )


def lock_run_dir(run_dir: str | Path) -> None:
    """Hold `run_dir` for this process until it exits: an advisory `flock` on RUN_DIR/.lock, which
    the kernel releases on any exit, `kill -9` included, so a dead run never leaves it locked. A
    second `zerotir train --resume` (or a new run) into a directory another process is writing
    interleaved both runs' metrics and samples and overwrote each other's checkpoints; now it is
    refused (UsageError). Re-entrant within one process (a resumed Trainer in the same process)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _held:
        return
    f = open(run_dir / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(f)
        f.close()
        raise UsageError(_in_use_message(run_dir, holder)) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    _held[key] = f


def _holder_elsewhere(run_dir: Path) -> str | None:
    """Who holds `run_dir`'s lock, if another process does (one `flock` attempt, released at once):
    its `pid N` line, or None where the lock is free, absent or this process's own."""
    if run_dir.resolve() in _held or not (run_dir / LOCK_FILE).exists():
        return None
    with open(run_dir / LOCK_FILE, encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(f)
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


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
    holder = _holder_elsewhere(run_dir)
    if holder is not None:  # a live run is neither overwritten nor moved aside
        raise UsageError(_in_use_message(run_dir, holder))
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
