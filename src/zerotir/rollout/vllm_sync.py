"""Weight sync into a running vLLM engine through its supported in-place reload.

Why not copy into the model's parameters: vLLM's CPU (and quantized GPU) paths repack linear weights
after loading, so a copy into `Parameter`s never reaches the kernels, and in the default
multiprocess engine core the model is not in this process at all. `reload_weights` (a worker
method reached by `collective_rpc`) re-runs the model's own weight loader and its post-load
processing, so it is correct on every backend. The weights travel as tensors when the engine core
runs in this process, and as one safetensors file in shared memory (`/dev/shm`) when it runs in
another; the file is removed as soon as the workers have read it.

After a reload the prefix cache holds keys/values computed with the old weights, so it is reset;
requests still in flight (a partial rollout) are preempted by that reset and recompute their
prefix under the new weights when they resume.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class SyncStats:
    """What one sync cost; `seconds` is wall time from the first copy to the reset prefix cache."""

    version: int
    seconds: float
    bytes: int
    transport: str
    """tensors (in-process engine core) | shm_file (engine core in another process)."""


def check_version(current: int | None, version: int) -> None:
    """Versions count the policy updates a set of weights has seen; a sync may never go back."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"weight version must be a non-negative int, got {version!r}")
    if current is not None and version < current:
        raise ValueError(f"weight version {version} is older than the engine's current version {current}")


def engine_core_in_process(llm_engine) -> bool:
    """True when the engine core (and so the model) lives in this process (`InprocClient`)."""
    from vllm.v1.engine.core_client import InprocClient

    return isinstance(getattr(llm_engine, "engine_core", None), InprocClient)


def prepare_state_dict(state_dict: dict, dtype: str) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors in the engine's dtype (the trainer's tensors are never
    aliased: the trainer goes on updating them in place)."""
    if not state_dict:
        raise ValueError("weight sync got an empty state dict")
    want = _TORCH_DTYPES.get(dtype)
    out = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state dict entry {k!r} is a {type(v).__name__}, not a tensor")
        t = v.detach().to("cpu", dtype=want if want is not None and v.is_floating_point() else v.dtype)
        out[k] = t.contiguous().clone() if t.data_ptr() == v.data_ptr() else t.contiguous()
    return out


def write_shm_checkpoint(tensors: dict[str, torch.Tensor], version: int) -> Path:
    """One safetensors file in a fresh directory under /dev/shm (RAM, not disk), the layout
    `reload_weights(weights_path=...)` reads. Tied weights (embeddings and LM head) are written
    under both names: safetensors refuses shared storage, and vLLM's layer-wise reload leaves a
    tied LM head stale unless its own name is in the checkpoint."""
    from safetensors.torch import save_file

    root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = Path(tempfile.mkdtemp(prefix=f"zerotir-weights-v{version}-", dir=root))
    seen: set[int] = set()
    unique = {}
    for k, v in tensors.items():
        unique[k] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
    save_file(unique, str(d / "model.safetensors"))
    return d


def remove_shm_checkpoint(d: Path) -> None:
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


def reload_rpc_kwargs(tensors: dict[str, torch.Tensor], in_process: bool, version: int):
    """(kwargs for `collective_rpc("reload_weights", ...)`, a cleanup callable, transport name)."""
    if in_process:
        return {"weights_iterator": list(tensors.items())}, (lambda: None), "tensors"
    d = write_shm_checkpoint(tensors, version)
    return {"weights_path": str(d)}, (lambda: remove_shm_checkpoint(d)), "shm_file"


def sync_llm(llm, state_dict: dict, version: int, dtype: str) -> SyncStats:
    """Reload `state_dict` into a synchronous `vllm.LLM` and reset its prefix cache."""
    t0 = time.perf_counter()
    tensors = prepare_state_dict(state_dict, dtype)
    in_proc = engine_core_in_process(llm.llm_engine)
    kwargs, cleanup, transport = reload_rpc_kwargs(tensors, in_proc, version)
    try:
        llm.collective_rpc("reload_weights", kwargs=kwargs)
    finally:
        cleanup()
    if not llm.reset_prefix_cache():
        raise RuntimeError("vLLM refused to reset its prefix cache after a weight sync")
    set_version = getattr(llm.llm_engine, "set_weight_version", None)
    if set_version is not None:
        set_version(str(version))
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    return SyncStats(version, time.perf_counter() - t0, nbytes, transport)
