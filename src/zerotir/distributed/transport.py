"""Weight broadcast over a torch.distributed process group (`distributed.weight_transport=collective`).

The group is the learner (rank 0; with sharded learners, rank 0 of the FSDP group after it gathered
the full state dict) and every rollout worker (ranks 1..R). It is its own group, made from a
`TCPStore` on a free port of the learner's node, not the FSDP learners' default group (a worker is
not a member of that one, and `new_group` can only split the default group). No Ray here: the
driver (distributed/collective.py) tells each member when to join and when to send or receive.

One broadcast, in this order on every member:
1. a header `[version, spec_bytes]` (int64): the policy version travels in-band, so a receiver
   never needs to be told which version it gets;
2. when `spec_bytes > 0`, the spec (JSON: names, shapes, dtypes). Sent on the first broadcast of a
   group and whenever the sender's state dict changes shape; receivers (re)allocate their buffers
   from it. A vLLM worker has no model of its own to derive shapes from, so the spec is always sent;
3. the tensors, as raw bytes in buckets of consecutive same-dtype tensors (`BUCKET_BYTES`): one
   collective per bucket instead of one per tensor. The receiver's buckets are allocated once; the
   state dict it hands to its engine holds views into them.
Backend: `pick_backend` (gloo when any member has no GPU, NCCL when all do). Gloo buffers are CPU
tensors; NCCL buffers live on the member's current CUDA device.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch

BUCKET_BYTES = 256 << 20
"""At most this many bytes per collective call (a larger tensor is a bucket of its own)."""

_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64,
                               torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool)}  # fmt: skip


def pick_backend(learner_gpus: float, rollout_gpus: float, device: str) -> str:
    """`nccl` when every member of the weight group holds a GPU (the learner and each rollout worker
    ask Ray for one and the learner trains on CUDA), else `gloo`: NCCL cannot reach a CPU-only
    member, gloo works everywhere (CPU tensors)."""
    return "nccl" if learner_gpus > 0 and rollout_gpus > 0 and device.startswith("cuda") else "gloo"


def free_endpoint() -> tuple[str, int]:
    """This node's address as others reach it (no packet is sent) and a free port."""
    ip = "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
    except OSError:
        pass
    with socket.socket() as s:
        s.bind(("", 0))
        return ip, s.getsockname()[1]


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * _DTYPES[self.dtype].itemsize


def spec_of(state_dict: dict[str, torch.Tensor]) -> list[Entry]:
    return [Entry(k, tuple(v.shape), str(v.dtype)) for k, v in state_dict.items()]


def buckets(spec: list[Entry], cap: int = BUCKET_BYTES) -> list[list[Entry]]:
    """Runs of consecutive same-dtype entries of at most `cap` bytes (sender and receivers compute
    the same plan from the same spec)."""
    out: list[list[Entry]] = []
    size = 0
    for e in spec:
        if out and out[-1][0].dtype == e.dtype and size + e.nbytes <= cap:
            out[-1].append(e)
            size += e.nbytes
        else:
            out.append([e])
            size = e.nbytes
    return out


def _encode(spec: list[Entry]) -> torch.Tensor:
    raw = json.dumps([[e.name, list(e.shape), e.dtype] for e in spec]).encode()
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def _decode(t: torch.Tensor) -> list[Entry]:
    return [Entry(n, tuple(s), d) for n, s, d in json.loads(bytes(t.cpu().tolist()).decode())]


class WeightGroup:
    """This process's membership of one weight group (rank 0 sends, the others receive)."""

    def __init__(self, host: str, port: int, world: int, rank: int, backend: str, timeout_s: float):
        import torch.distributed as dist

        self.rank, self.world, self.backend = rank, world, backend
        timeout = timedelta(seconds=timeout_s)
        self.store = dist.TCPStore(host, port, world, is_master=rank == 0, timeout=timeout)
        if backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
            self.pg = dist.ProcessGroupNCCL(self.store, rank, world)
        else:
            self.device = torch.device("cpu")
            self.pg = dist.ProcessGroupGloo(self.store, rank, world, timeout)
        self._spec: list[Entry] | None = None  # sender: what receivers hold; receiver: its buffers' layout
        self._flat: list[torch.Tensor] = []
        self.buffers: dict[str, torch.Tensor] = {}

    def _bcast(self, t: torch.Tensor) -> None:
        self.pg.broadcast([t], _opts()).wait()

    # ------------------------------------------------------------------ rank 0
    def send(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        """Broadcast `state_dict` at `version`; returns the bytes of tensor data sent."""
        spec = spec_of(state_dict)
        fresh = spec != self._spec
        blob = _encode(spec) if fresh else torch.empty(0, dtype=torch.uint8)
        self._bcast(torch.tensor([version, blob.numel()], dtype=torch.int64, device=self.device))
        if fresh:
            self._bcast(blob.to(self.device))
            self._spec = spec
        sent = 0
        for group in buckets(spec):
            parts = [state_dict[e.name].detach().reshape(-1) for e in group]
            flat = (torch.cat(parts) if len(parts) > 1 else parts[0]).to(self.device).contiguous()
            self._bcast(flat.view(torch.uint8))
            sent += flat.numel() * flat.element_size()
        return sent

    # ------------------------------------------------------------------ ranks 1..
    def _allocate(self, spec: list[Entry]) -> None:
        self._spec, self._flat, self.buffers = spec, [], {}
        for group in buckets(spec):
            dtype = _DTYPES[group[0].dtype]
            flat = torch.empty(sum(e.numel for e in group), dtype=dtype, device=self.device)
            self._flat.append(flat)
            off = 0
            for e in group:
                self.buffers[e.name] = flat[off : off + e.numel].view(e.shape)
                off += e.numel

    def receive(self) -> int:
        """Receive one broadcast into `buffers` (overwritten in place); returns its version."""
        head = torch.zeros(2, dtype=torch.int64, device=self.device)
        self._bcast(head)
        version, nspec = (int(x) for x in head.tolist())
        if nspec:
            blob = torch.empty(nspec, dtype=torch.uint8, device=self.device)
            self._bcast(blob)
            self._allocate(_decode(blob))
        if self._spec is None:
            raise RuntimeError("weight group: the first broadcast came without its spec")
        for flat in self._flat:
            self._bcast(flat.view(torch.uint8))
        return version

    def close(self) -> None:
        """Drop this membership (a rebuilt group gets a fresh store and port)."""
        for stop in ("abort", "shutdown"):
            fn = getattr(self.pg, stop, None)
            if fn is not None:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - best effort: the group is being discarded
                    pass
                break
        self.pg = None  # type: ignore[assignment]
        self.buffers, self._flat = {}, []


def _opts():
    import torch.distributed as dist

    o = dist.BroadcastOptions()
    o.rootRank = 0
    return o


__all__ = ["BUCKET_BYTES", "Entry", "WeightGroup", "buckets", "free_endpoint", "pick_backend", "spec_of"]
