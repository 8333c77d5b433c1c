"""Atomic checkpoints: write into a temp dir, fsync, rename; a `COMPLETE` manifest written last.

A checkpoint without a valid manifest (a crash mid-write) or whose files do not match it (sizes) is
skipped with a warning, and the previous one is used: no run loses more than one save period.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)
MANIFEST = "COMPLETE.json"


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def save_checkpoint(ckpt_root: Path, step: int, policy, tokenizer, payload: dict, keep: int = 2) -> Path:
    """`payload`: name -> object saved with torch.save (optimizer, scheduler, critic, rng, trainer state)."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:07d}"
    tmp = ckpt_root / f".tmp_step_{step:07d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    policy.save_pretrained(tmp / "policy", safe_serialization=True)
    tokenizer.save_pretrained(tmp / "policy")
    for name, obj in payload.items():
        torch.save(obj, tmp / f"{name}.pt")
    files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    for p in tmp.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files}))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.exists():
        return []
    return sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def verify_checkpoint(path: Path) -> str | None:
    """None if the checkpoint is complete and its files match the manifest, else the reason."""
    m = path / MANIFEST
    if not m.exists():
        return "no manifest (incomplete write)"
    try:
        manifest = json.loads(m.read_text())
    except json.JSONDecodeError:
        return "manifest unreadable"
    for rel, size in manifest["files"].items():
        f = path / rel
        if not f.exists():
            return f"missing {rel}"
        if f.stat().st_size != size:
            return f"{rel} has {f.stat().st_size} bytes, manifest says {size}"
    return None


def latest_valid_checkpoint(ckpt_root: Path) -> Path | None:
    for path in reversed(list_checkpoints(ckpt_root)):
        why = verify_checkpoint(path)
        if why is None:
            return path
        log.warning("skipping checkpoint %s: %s", path, why)
    return None


def load_payload(path: Path, name: str):
    return torch.load(path / f"{name}.pt", map_location="cpu", weights_only=False)
