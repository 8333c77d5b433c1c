"""How much accelerator memory a run's model states need per GPU, before any GPU is rented.

`zerotir train --preset qwen2.5-7b-zerotir --estimate-memory [--gpus 1,8]` prints it. Counted: the
policy (weights, gradients, AdamW's two moments), the reference (weights, when `algo.kl_coef > 0`),
the PPO critic (backbone without the LM head plus the value head: weights, gradients, two moments)
and a colocated vLLM engine's copy of the weights (`rollout.engine=vllm`; its KV cache is whatever
`rollout.vllm_gpu_memory_utilization` leaves). Every state is in `model.dtype`, as the learner
builds them (torch's AdamW keeps its moments in the parameter's dtype). With FSDP2 full sharding over
N GPUs, each training state is divided by N; the vLLM copy is not sharded (one engine per GPU).
Not counted: activations (bounded by `trainer.micro_batch_size` and gradient checkpointing), the
logits of a micro-batch, CUDA context and allocator slack (budget a few GiB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from zerotir.config import RunConfig

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1024**3


@dataclass(frozen=True)
class Arch:
    """A decoder-only transformer's shape (Llama/Qwen2 layout: GQA attention, gated MLP)."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tie_embeddings: bool
    qkv_bias: bool = False

    def backbone_params(self) -> int:
        """Embedding, layers and final norm (what `AutoModel` loads for the critic)."""
        h = self.hidden
        kv = self.kv_heads * (h // self.heads)
        attn = 2 * h * h + 2 * h * kv + ((h + 2 * kv) if self.qkv_bias else 0)
        mlp = 3 * h * self.intermediate
        return self.vocab * h + self.layers * (attn + mlp + 2 * h) + h

    def params(self) -> int:
        """The causal LM: the backbone plus an untied LM head."""
        return self.backbone_params() + (0 if self.tie_embeddings else self.vocab * self.hidden)

    @classmethod
    def from_config(cls, c: dict) -> Arch:
        return cls(
            hidden=c["hidden_size"],
            layers=c["num_hidden_layers"],
            intermediate=c["intermediate_size"],
            heads=c["num_attention_heads"],
            kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
            vocab=c["vocab_size"],
            tie_embeddings=bool(c.get("tie_word_embeddings", False)),
            qkv_bias=bool(c.get("attention_bias", c.get("model_type") == "qwen2")),
        )


KNOWN_ARCHS = {
    # config.json of the hub checkpoints (the presets' models), so no download is needed.
    "Qwen/Qwen2.5-1.5B": Arch(1536, 28, 8960, 12, 2, 151936, True, True),
    "Qwen/Qwen2.5-7B": Arch(3584, 28, 18944, 28, 4, 152064, False, True),
}


def arch_for(path: str) -> Arch:
    """The shape of `model.path`: a known hub name, or a local directory's config.json."""
    if path in KNOWN_ARCHS:
        return KNOWN_ARCHS[path]
    from zerotir.models import resolve_model_path

    cfg = Path(resolve_model_path(path)) / "config.json"
    if not cfg.exists():
        raise ValueError(
            f"--estimate-memory: no config.json for {path!r}; give a local directory or one of {sorted(KNOWN_ARCHS)}"
        )
    return Arch.from_config(json.loads(cfg.read_text()))


@dataclass(frozen=True)
class MemoryEstimate:
    rows: dict[str, int]
    """Component -> bytes per GPU."""
    gpus: int

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def estimate(cfg: RunConfig, gpus: int = 1, arch: Arch | None = None) -> MemoryEstimate:
    """Bytes per GPU of each model state of `cfg` with FSDP2 full sharding over `gpus` (1: none)."""
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    arch = arch or arch_for(cfg.model.path)
    b = BYTES[cfg.model.dtype]
    p = arch.params()
    rows = {
        "policy weights": p * b // gpus,
        "policy gradients": p * b // gpus,
        "policy AdamW moments": 2 * p * b // gpus,
    }
    if cfg.algo.kl_coef > 0:
        rows["reference weights"] = p * b // gpus
    if cfg.algo.name == "ppo":
        c = arch.backbone_params() + arch.hidden + 1  # the value head: Linear(hidden, 1)
        rows["critic weights"] = c * b // gpus
        rows["critic gradients"] = c * b // gpus
        rows["critic AdamW moments"] = 2 * c * b // gpus
    if cfg.rollout.engine == "vllm":
        rows["vLLM weights (colocated, unsharded)"] = p * b
    return MemoryEstimate(rows, gpus)


def format_estimates(cfg: RunConfig, gpus: list[int]) -> str:
    arch = arch_for(cfg.model.path)
    ests = [estimate(cfg, n, arch) for n in gpus]
    head = f"{cfg.name}: {cfg.model.path}, {arch.params() / 1e9:.2f}B parameters, {cfg.model.dtype}"
    cols = "".join(f"{'1 GPU' if n == 1 else f'FSDP2 x{n}':>14}" for n in gpus)
    lines = [head, f"{'GiB per GPU':<38}{cols}"]
    for key in ests[0].rows:
        lines.append(f"{key:<38}" + "".join(f"{e.rows[key] / GIB:>14.2f}" for e in ests))
    lines.append(f"{'total (model states)':<38}" + "".join(f"{e.total / GIB:>14.2f}" for e in ests))
    lines.append("not counted: activations, micro-batch logits, vLLM KV cache, CUDA context")
    return "\n".join(lines)
