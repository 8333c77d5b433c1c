"""A transformers engine for CPU (and one GPU): our own decode loop over a KV cache.

Why not `model.generate`: we need, per prompt, its own stop strings and token budget, the exact
logprob of each sampled token, and the sampled ids verbatim (token-in/token-out). Prompts are left
padded; rows that finish are dropped from the batch and its KV cache at once, so stragglers do not
pay for the whole batch.
"""

from __future__ import annotations

import inspect

import torch

from zerotir.rollout.engine import Completion, SamplingParams


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; return (token ids (B,), their logprobs (B,))."""
    logits = logits.float()
    if temperature <= 0:
        logp = torch.log_softmax(logits, dim=-1)
        tok = logits.argmax(dim=-1)
        return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits / temperature, dim=-1)
    probs = logp.exp()
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        choice = torch.multinomial(sorted_p, 1, generator=generator)
        tok = idx.gather(-1, choice).squeeze(-1)
    else:
        tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


class HFEngine:
    supports_stop_switch = True
    """Can switch a row's stop strings mid-generation (saves a round trip per code block)."""

    def __init__(self, model: torch.nn.Module, tokenizer, device: str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self._pieces: dict[int, str] = {}
        self.eos_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # transformers 5 renamed `past_key_values` to `cache` (the old name is removed in 5.40)
        self._cache_kw = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )

    def _forward(self, **kw):
        past = kw.pop("past", None)
        if past is not None:
            kw[self._cache_kw] = past
        out = self.model(use_cache=True, **kw)
        return out.logits[:, -1], getattr(out, self._cache_kw)

    def load_weights(self, state_dict: dict) -> None:
        """Weight sync. When the trainer and the engine share the module this is a no-op copy."""
        if state_dict is None:
            return
        own = self.model.state_dict()
        if all(own[k].data_ptr() == v.data_ptr() for k, v in state_dict.items() if k in own):
            return
        self.model.load_state_dict(state_dict, strict=False)

    def _piece(self, tok: int) -> str:
        s = self._pieces.get(tok)
        if s is None:
            s = self.tokenizer.decode([tok])
            self._pieces[tok] = s
        return s

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        stops: list[list[str]],
        max_tokens: list[int] | None = None,
        stop_switch: dict[str, list[str]] | None = None,
    ) -> list[Completion]:
        """`stop_switch`: when a row hits a stop string that is a key here, it does not finish; its stops
        become the mapped list and generation continues (e.g. ```python -> [```])."""
        B = len(prompts)
        stops = [list(st) for st in stops]
        if B == 0:
            return []
        budgets = list(max_tokens) if max_tokens is not None else [params.max_new_tokens] * B
        gen = torch.Generator(device="cpu")
        if params.seed is not None:
            gen.manual_seed(params.seed)
        else:
            gen.seed()
        was_training = self.model.training
        self.model.eval()
        out_ids: list[list[int]] = [[] for _ in range(B)]
        out_lp: list[list[float]] = [[] for _ in range(B)]
        texts = [""] * B
        finish: list[str | None] = [None if budgets[i] > 0 else "length" for i in range(B)]
        stop_hit: list[str | None] = [None] * B
        max_stop = [max((len(s) for s in st), default=0) for st in stops]

        rows = [i for i in range(B) if finish[i] is None]  # batch row -> prompt index
        if rows:
            L = max(len(prompts[i]) for i in rows)
            ids = torch.full((len(rows), L), self.pad_id, dtype=torch.long)
            attn = torch.zeros((len(rows), L), dtype=torch.long)
            for r, i in enumerate(rows):
                p = prompts[i]
                ids[r, L - len(p) :] = torch.tensor(p, dtype=torch.long)
                attn[r, L - len(p) :] = 1
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            logits, past = self._forward(
                input_ids=ids.to(self.device),
                attention_mask=attn.to(self.device),
                position_ids=pos.to(self.device),
            )
            next_pos = pos[:, -1] + 1
        while rows:
            tok, lp = sample_next(logits, params.temperature, params.top_p, gen)
            tok_l, lp_l = tok.tolist(), lp.tolist()
            alive = []
            for r, i in enumerate(rows):
                t = tok_l[r]
                out_ids[i].append(t)
                out_lp[i].append(lp_l[r])
                if t in self.eos_ids and not params.ignore_eos:
                    finish[i] = "eos"
                    continue
                texts[i] += self._piece(t)
                if max_stop[i]:
                    tail = texts[i][-(max_stop[i] + 16) :]
                    hit = next((s for s in stops[i] if s in tail), None)
                    if hit is not None and stop_switch and hit in stop_switch:
                        stops[i] = list(stop_switch[hit])
                        max_stop[i] = max((len(s) for s in stops[i]), default=0)
                        texts[i] = ""  # later stops are searched only in text after the switch
                    elif hit is not None:
                        finish[i], stop_hit[i] = "stop", hit
                        continue
                if len(out_ids[i]) >= budgets[i]:
                    finish[i] = "length"
                    continue
                alive.append(r)
            if not alive:
                break
            if len(alive) < len(rows):
                # Drop finished rows from the batch (and its KV cache): stragglers run alone.
                keep = torch.tensor(alive, dtype=torch.long)
                past = _select_cache(past, keep)
                attn, next_pos, tok = attn[keep], next_pos[keep], tok[keep]
                rows = [rows[r] for r in alive]
            attn = torch.cat([attn, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
            logits, past = self._forward(
                input_ids=tok[:, None].to(self.device),
                attention_mask=attn.to(self.device),
                position_ids=next_pos[:, None].to(self.device),
                past=past,
            )
            next_pos = next_pos + 1
        if was_training:
            self.model.train()
        return [Completion(out_ids[i], out_lp[i], finish[i] or "length", stop_hit[i]) for i in range(B)]


def _select_cache(past, keep: torch.Tensor):
    """Keep batch rows `keep` of a KV cache (DynamicCache or legacy tuples)."""
    if hasattr(past, "batch_select_indices"):
        past.batch_select_indices(keep)
        return past
    if hasattr(past, "layers"):
        for layer in past.layers:
            layer.keys = layer.keys[keep]
            layer.values = layer.values[keep]
        return past
    return tuple(tuple(t[keep] for t in layer) for layer in past)
