"""From trajectories to padded tensors, and per-token logprobs / values of a model on them.

Alignment: the logit at position p predicts token p+1, so response token t (absolute position
P + t for a prompt of length P) is scored by the logit at P + t − 1. The same convention gives the
critic's value of the state before each response token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils.checkpoint

from zerotir.algos.losses import entropy_from_logits
from zerotir.types import Trajectory


@dataclass
class TokenBatch:
    """Two logprob fields, never swapped silently: `rollout_logprobs` are the engine's, as returned;
    `recomputed_logprobs` are the trainer's on the same tokens (set when the engine's cannot serve
    as the behaviour policy, e.g. vLLM's other kernels). `old_logprobs`, the PPO ratio's
    denominator, is the recomputation when there is one, else the engine's."""

    input_ids: torch.Tensor  # (B, L) prompt + response, right padded
    attention_mask: torch.Tensor  # (B, L)
    resp_start: torch.Tensor  # (B,) prompt lengths
    action_mask: torch.Tensor  # (B, T) 1 on model-sampled response tokens
    response_ids: torch.Tensor  # (B, T)
    rollout_logprobs: torch.Tensor  # (B, T) as the engine returned them
    recomputed_logprobs: torch.Tensor | None = None  # (B, T) the trainer's, when recomputed

    @property
    def T(self) -> int:
        return self.action_mask.size(1)

    @property
    def old_logprobs(self) -> torch.Tensor:
        """The behaviour policy's logprobs for the ratio (see the class docstring)."""
        return self.recomputed_logprobs if self.recomputed_logprobs is not None else self.rollout_logprobs

    def select(self, idx: torch.Tensor | list[int]) -> TokenBatch:
        idx = torch.as_tensor(idx, dtype=torch.long)
        fields = (
            "input_ids",
            "attention_mask",
            "resp_start",
            "action_mask",
            "response_ids",
            "rollout_logprobs",
        )
        rec = self.recomputed_logprobs
        return TokenBatch(*(getattr(self, f)[idx] for f in fields), None if rec is None else rec[idx])


def collate(trajs: list[Trajectory], pad_id: int) -> TokenBatch:
    B = len(trajs)
    L = max(len(t.prompt_ids) + len(t.response_ids) for t in trajs)
    T = max(max(len(t.response_ids) for t in trajs), 1)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    amask = torch.zeros((B, T), dtype=torch.float32)
    rids = torch.full((B, T), pad_id, dtype=torch.long)
    old = torch.zeros((B, T), dtype=torch.float32)
    start = torch.zeros(B, dtype=torch.long)
    for i, t in enumerate(trajs):
        seq = t.prompt_ids + t.response_ids
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[i, : len(seq)] = 1
        n = len(t.response_ids)
        start[i] = len(t.prompt_ids)
        if n:
            amask[i, :n] = torch.tensor(t.action_mask, dtype=torch.float32)
            rids[i, :n] = torch.tensor(t.response_ids, dtype=torch.long)
            old[i, :n] = torch.tensor(t.rollout_logprobs, dtype=torch.float32)
        if t.excluded:
            amask[i] = 0.0
    return TokenBatch(ids, attn, start, amask, rids, old)


def _gather_index(batch: TokenBatch) -> torch.Tensor:
    """(B, T) positions of the logits that score each response token."""
    T = batch.T
    pos = batch.resp_start[:, None] - 1 + torch.arange(T)[None, :]
    return pos.clamp(max=batch.input_ids.size(1) - 1)


def response_logits(model, batch: TokenBatch, device: str = "cpu") -> torch.Tensor:
    """(B, T, V) logits scoring each response token (the full-vocabulary path; see `response_stats`)."""
    out = model(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False
    )
    idx = _gather_index(batch).to(device)
    return out.logits.gather(1, idx[:, :, None].expand(-1, -1, out.logits.size(-1)))


def token_logprobs(
    logits: torch.Tensor, response_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log softmax(logits / T) at the response tokens: the same convention as the engines."""
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, response_ids.to(logits.device)[:, :, None]).squeeze(-1)


_HEAD_SCALES = ("final_logit_softcapping", "logit_scale", "logits_scaling")
"""Config attributes of models whose logits are not just lm_head(hidden) (Gemma2, Cohere, Granite)."""


def _split_head(model) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(transformer body, LM head) of an HF causal LM whose logits are `head(body(x))`, else None."""
    body, head = getattr(model, "base_model", None), model.get_output_embeddings()
    cfg = getattr(model, "config", None)
    if body is None or body is model or head is None or any(getattr(cfg, a, None) for a in _HEAD_SCALES):
        return None
    return body, head


def _chunk_stats(
    head: torch.nn.Module, h: torch.Tensor, ids: torch.Tensor, temperature: float, entropy_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprobs, entropy) of one (B, c) chunk: the same maths as `token_logprobs` and
    `entropy_from_logits` (entropy of the untempered softmax), on (B, c, V) logits that die here."""
    logits = head(h)
    lp = token_logprobs(logits, ids, temperature)
    with torch.enable_grad() if entropy_grad else torch.no_grad():
        ent = entropy_from_logits(logits)
    return lp, ent


def response_stats(
    model,
    batch: TokenBatch,
    device: str = "cpu",
    temperature: float = 1.0,
    chunk: int = 256,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) logprobs of the response tokens and (B, T) entropies of the policy there.

    With `chunk` > 0 the LM head runs on `chunk` response positions at a time, on the hidden states
    of the response only, so the (B, L, V) logits of the whole sequence never exist: memory is
    O(B·chunk·V) instead of O(B·L·V) (10.8 GB for a 135M model, micro-batch 4, under PPO). With
    autograd on, each chunk is checkpointed (its logits are recomputed in the backward pass, not
    kept). `chunk` = 0, or a model whose logits are not `head(body(x))`, takes the full path.
    The entropy has a graph only with `entropy_grad` (a non-zero entropy coefficient)."""
    parts = _split_head(model) if chunk > 0 else None
    if parts is None:
        logits = response_logits(model, batch, device)
        lp = token_logprobs(logits, batch.response_ids, temperature)
        with torch.enable_grad() if entropy_grad else torch.no_grad():
            return lp, entropy_from_logits(logits)
    body, head = parts
    hid = body(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False
    ).last_hidden_state
    idx = _gather_index(batch).to(device)
    hid = hid.gather(1, idx[:, :, None].expand(-1, -1, hid.size(-1)))  # (B, T, H)
    ids = batch.response_ids.to(device)
    lps, ents = [], []
    for s in range(0, batch.T, chunk):
        h, c = hid[:, s : s + chunk], ids[:, s : s + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = torch.utils.checkpoint.checkpoint(
                _chunk_stats, head, h, c, temperature, entropy_grad, use_reentrant=False
            )
        else:
            lp, ent = _chunk_stats(head, h, c, temperature, entropy_grad)
        lps.append(lp)
        ents.append(ent)
    return torch.cat(lps, 1), torch.cat(ents, 1)


def micro_batches(n: int, size: int) -> list[list[int]]:
    """Row indices of consecutive micro-batches of at most `size` rows covering `n` rows."""
    return [list(range(s, min(s + size, n))) for s in range(0, n, size)]


@torch.no_grad()
def batched_logprobs(
    model, batch: TokenBatch, micro: int, temperature: float, device: str = "cpu", chunk: int = 0
) -> torch.Tensor:
    """(B, T) logprobs under `model`, `micro` rows at a time (`chunk`: see `response_stats`)."""
    out = []
    for idx in micro_batches(batch.input_ids.size(0), micro):
        mb = batch.select(idx)
        if chunk > 0:
            out.append(response_stats(model, mb, device, temperature, chunk)[0].cpu())
        else:
            out.append(token_logprobs(response_logits(model, mb, device), mb.response_ids, temperature).cpu())
    return torch.cat(out)


class ValueModel(torch.nn.Module):
    """Critic for PPO: the policy's transformer body with a scalar head."""

    def __init__(self, backbone: torch.nn.Module, hidden: int):
        super().__init__()
        self.backbone = backbone
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, batch: TokenBatch, device: str = "cpu") -> torch.Tensor:
        h = self.backbone(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            use_cache=False,
        ).last_hidden_state
        v = self.value_head(h).squeeze(-1)
        return v.gather(1, _gather_index(batch).to(device))
