"""A transformers engine for CPU (and one GPU): our own decode loop over a KV cache.

Why not `model.generate`: we need, per prompt, its own stop strings and token budget, the exact
logprob of each sampled token, and the sampled ids verbatim (token-in/token-out). Prompts are left
padded; rows that finish are dropped from the batch and its KV cache at once, so stragglers do not
pay for the whole batch.
"""

from __future__ import annotations

import copy
import inspect

import torch

from zerotir.rollout.chat import stop_token_ids
from zerotir.rollout.engine import (
    Completion,
    EngineCapabilities,
    Interaction,
    SamplingParams,
    StopDriver,
    StopScan,
    derive_seed,
)


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row by inverting its CDF at `uniforms` (B,) in [0, 1): row r takes the
    first token whose cumulative probability exceeds `uniforms[r]` of the total (tokens top-p drops
    have probability 0 and are never taken). Return (token ids (B,), their logprobs (B,)).
    A uniform per row, not `torch.multinomial` over the batch: each row's draws come from its own
    stream, whichever rows are in the batch. `uniforms` is unused at temperature 0 (greedy)."""
    logits = logits.float()
    if temperature <= 0:
        logp = torch.log_softmax(logits, dim=-1)
        tok = logits.argmax(dim=-1)
        return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
    if uniforms is None:
        raise ValueError("sampling at temperature > 0 needs a uniform per row")
    logp = torch.log_softmax(logits / temperature, dim=-1)
    probs = logp.exp()
    idx = None
    if top_p < 1.0:
        probs, idx = probs.sort(dim=-1, descending=True)
        probs = probs * (probs.cumsum(-1) - probs < top_p)
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    choice = torch.searchsorted(cdf, uniforms.to(cdf.device, cdf.dtype)[:, None] * total, right=True)
    # A uniform just below 1 can round to the total: take the last token that has probability then
    # (the first where the CDF reaches the total), never one past it that top-p dropped.
    choice = torch.minimum(choice, (cdf < total).sum(-1, keepdim=True))
    tok = (choice if idx is None else idx.gather(-1, choice)).squeeze(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


class RowStreams:
    """One CPU random stream per prompt of a call (seeded `derive_seed(seed, i)`), drawn only when
    that row samples: a row's tokens depend on its own stream alone, not on which rows pause,
    resume or finish around it, so the same seed gives the same rollout however fast code runs."""

    def __init__(self, n: int, seed: int | None):
        base = seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
        self._gens = [torch.Generator().manual_seed(derive_seed(base, i)) for i in range(n)]

    def draw(self, rows: list[int]) -> torch.Tensor:
        """A uniform in [0, 1) for each row of `rows` (prompt indices), from each row's stream."""
        return torch.cat([torch.rand(1, generator=self._gens[i], dtype=torch.float64) for i in rows])


class HFEngine:
    compact_at = 16
    """Compact the KV cache once this many columns are masked out in every row."""
    capabilities = EngineCapabilities(interactive=True, stop_switch=True, exact_logprobs=True)
    """One decode loop for tool rollouts, stop switching (saves a round trip per code block), and the
    trainer's own module: its logprobs are the trainer's (up to batch-shape float noise)."""

    def __init__(self, model: torch.nn.Module, tokenizer, device: str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self._pieces: dict[int, str] = {}
        # EOS and every end-of-turn token (`<|im_end|>`, `<|eot_id|>`, ...) end a response.
        gen_cfg = getattr(model, "generation_config", None)
        self.eos_ids = stop_token_ids(tokenizer, getattr(gen_cfg, "eos_token_id", None))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # transformers 5 renamed `past_key_values` to `cache` (the old name is removed in 5.40)
        self._cache_kw = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters

    def _forward(self, **kw):
        past = kw.pop("past", None)
        kw = {k: v.to(self.device) for k, v in kw.items()}
        if past is not None:
            kw[self._cache_kw] = past
        if self._logits_to_keep:
            kw["logits_to_keep"] = 1  # the prefill's full (batch, length, vocab) logits are never needed
        out = self.model(use_cache=True, **kw)
        return out.logits[:, -1], getattr(out, self._cache_kw)

    def load_weights(self, state_dict: dict, version: int = 0) -> None:
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
        budgets = list(max_tokens) if max_tokens is not None else [params.max_new_tokens] * len(prompts)
        driver = StopDriver(stops, stop_switch)
        self._decode(prompts, params, budgets, driver)
        return driver.completions()

    def generate_interactive(
        self, prompts: list[list[int]], params: SamplingParams, budgets: list[int], driver: Interaction
    ) -> None:
        """A whole multi-turn rollout in one decode loop (see `Interaction`). `budgets` cap sampled plus
        fed tokens per row; the driver records everything it is told."""
        self._decode(prompts, params, list(budgets), driver)

    @torch.no_grad()
    def _decode(self, prompts: list[list[int]], params: SamplingParams, budgets: list[int], drv) -> None:
        """The decode loop. A paused row stays in the batch but feeds nothing: its step columns are
        masked out (holes in its attention mask), so its KV cache is kept without surgery. A row that
        resumes has its held token and the injected ids (all but the last) prefilled into free columns
        of its own cache (`_prefill_rows`), then feeds the last one in the common one-token step."""
        B = len(prompts)
        streams = RowStreams(B, params.seed) if params.temperature > 0 else None
        was_training = self.model.training
        self.model.eval()
        remaining = list(budgets)
        scans = [StopScan(self._piece) for _ in range(B)]

        def refresh_stops(i: int) -> None:
            # Asked at the start and after every event; later stops are searched only in text after it.
            scans[i].reset(drv.stops(i))

        for i in range(B):
            refresh_stops(i)
        seg_ids: list[list[int]] = [[] for _ in range(B)]
        seg_lps: list[list[float]] = [[] for _ in range(B)]

        def take(i: int) -> tuple[list[int], list[float]]:
            ids, lps = seg_ids[i], seg_lps[i]
            seg_ids[i], seg_lps[i] = [], []
            return ids, lps

        rows: list[int] = []  # batch row -> prompt index
        for i in range(B):
            if remaining[i] <= 0:
                drv.on_end(i, "length", [], [])
            else:
                rows.append(i)
        if not rows:
            return
        L = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(rows), L), dtype=torch.long)
        for r, i in enumerate(rows):
            p = prompts[i]
            ids[r, L - len(p) :] = torch.tensor(p, dtype=torch.long)
            attn[r, L - len(p) :] = 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        logits, past = self._forward(input_ids=ids, attention_mask=attn, position_ids=pos)
        next_pos = pos[:, -1] + 1
        fed = list(range(len(rows)))  # batch rows whose last column holds a new token (valid logits)
        held: dict[int, int] = {}  # paused row -> its last sampled token, fed when it resumes
        while rows:
            feed: dict[int, list[int]] = {}
            drop: set[int] = set()
            if fed:
                lg = logits if len(fed) == len(rows) else logits[torch.tensor(fed, device=logits.device)]
                u = streams.draw([rows[r] for r in fed]) if streams is not None else None
                tok, lp = sample_next(lg, params.temperature, params.top_p, u)
                for r, t, lpv in zip(fed, tok.tolist(), lp.tolist()):
                    i = rows[r]
                    seg_ids[i].append(t)
                    seg_lps[i].append(lpv)
                    remaining[i] -= 1
                    if t in self.eos_ids and not params.ignore_eos:
                        drv.on_end(i, "eos", *take(i))
                        drop.add(i)
                        continue
                    hit = scans[i].feed(t)
                    if hit is not None:
                        action = drv.on_stop(i, hit, *take(i))
                        if action == "finish":
                            drop.add(i)
                            continue
                        if action == "pause":
                            held[i] = t
                            continue
                        refresh_stops(i)
                    if remaining[i] <= 0:
                        drv.on_end(i, "length", *take(i))
                        drop.add(i)
                        continue
                    feed[i] = [t]
            if held:
                for i, more in drv.poll(block=not feed).items():
                    t = held.pop(i)
                    if more is None:
                        drop.add(i)
                        continue
                    feed[i] = [t, *more]
                    remaining[i] -= len(more)
                    refresh_stops(i)
            if drop:
                # Drop finished rows from the batch (and its KV cache): stragglers run alone.
                alive = [r for r, i in enumerate(rows) if i not in drop]
                keep = torch.tensor(alive, dtype=torch.long)
                if alive:
                    past = _select_cache(past, keep.to(self.device))
                attn, next_pos = attn[keep], next_pos[keep]
                rows = [rows[r] for r in alive]
            if not feed:
                fed = []
                continue
            if attn.shape[1] - int(attn.sum(1).max()) >= self.compact_at:
                past, attn = _compact_cache(past, attn, self.device)
            multi = [r for r, i in enumerate(rows) if len(feed.get(i, ())) > 1]
            if multi:
                # Resuming rows: their held token and the injected ids (all but the last) go through
                # the model as a small batch of their own; the rest of the batch only gets masked
                # columns. Then every fed row feeds one token below.
                past, attn = self._prefill_rows(
                    past, attn, next_pos, multi, [feed[rows[r]][:-1] for r in multi]
                )
                for r in multi:
                    feed[rows[r]] = feed[rows[r]][-1:]
            inp = torch.full((len(rows), 1), self.pad_id, dtype=torch.long)
            new_attn = torch.zeros((len(rows), 1), dtype=torch.long)
            pos = next_pos[:, None].clone()
            fed = []
            for r, i in enumerate(rows):
                f = feed.get(i)
                if f is not None:
                    inp[r, 0], new_attn[r, 0] = f[0], 1
                    next_pos[r] += 1
                    fed.append(r)
            attn = torch.cat([attn, new_attn], dim=1)
            logits, past = self._forward(input_ids=inp, attention_mask=attn, position_ids=pos, past=past)
        if was_training:
            self.model.train()

    def _prefill_rows(self, past, attn, next_pos, rs: list[int], seqs: list[list[int]]):
        """Feed `seqs[j]` to batch row `rs[j]` through a copy of those rows' cache, then store the new
        keys/values in masked (free) columns of each row's own cache. Attention ignores column order
        (positions are in the rotary keys, validity in the mask), so a row's left padding and its old
        holes are reused; the cache widens only by what the fullest row lacks. Advances `next_pos`."""
        width = max(len(q) for q in seqs)
        sel = torch.tensor(rs, dtype=torch.long)
        sel_dev = sel.to(self.device)
        ids = torch.full((len(rs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rs), width), dtype=torch.long)
        pos = next_pos[sel][:, None].repeat(1, width)
        for j, (r, q) in enumerate(zip(rs, seqs)):
            n = len(q)
            ids[j, width - n :] = torch.tensor(q, dtype=torch.long)
            mask[j, width - n :] = 1
            pos[j, width - n :] = next_pos[r] + torch.arange(n)
            next_pos[r] += n
        sub = _copy_cache(past, lambda t: t[sel_dev])
        _, sub = self._forward(
            input_ids=ids, attention_mask=torch.cat([attn[sel], mask], dim=1), position_ids=pos, past=sub
        )
        free = attn[sel] == 0
        short = max(len(q) - int(f.sum()) for q, f in zip(seqs, free))
        if short > 0:
            past = _map_cache(
                past, lambda t: torch.cat([t, t.new_zeros(*t.shape[:2], short, t.shape[3])], dim=2)
            )
            attn = torch.cat([attn, torch.zeros((attn.shape[0], short), dtype=attn.dtype)], dim=1)
            free = torch.cat([free, torch.ones((len(rs), short), dtype=torch.bool)], dim=1)
        dst_row, dst_col, src_row, src_col = [], [], [], []
        for j, (r, q) in enumerate(zip(rs, seqs)):
            n = len(q)
            cols = free[j].nonzero().squeeze(1)[-n:].tolist()
            dst_row += [r] * n
            dst_col += cols
            src_row += [j] * n
            src_col += range(width - n, width)
        attn[dst_row, dst_col] = 1
        dr, dc, sr, sc = (
            torch.tensor(x, dtype=torch.long, device=self.device)
            for x in (dst_row, dst_col, src_row, src_col)
        )
        new = iter([t[:, :, -width:] for t in _cache_tensors(sub)])

        def place(t: torch.Tensor) -> torch.Tensor:
            t[dr, :, dc] = next(new)[sr, :, sc]
            return t

        return _map_cache(past, place), attn


def _map_cache(past, fn):
    """Apply `fn` to every key and value tensor (batch, heads, length, dim) of a KV cache: the
    layer objects of transformers >= 4.56, the key/value lists before that, or legacy tuples."""
    if hasattr(past, "layers"):
        for layer in past.layers:
            layer.keys = fn(layer.keys)
            layer.values = fn(layer.values)
        return past
    if hasattr(past, "key_cache"):
        past.key_cache = [fn(t) for t in past.key_cache]
        past.value_cache = [fn(t) for t in past.value_cache]
        return past
    return tuple(tuple(fn(t) for t in layer) for layer in past)


def _cache_tensors(past) -> list[torch.Tensor]:
    """Every key and value tensor, in the order `_map_cache` visits them."""
    out: list[torch.Tensor] = []
    _map_cache(past, lambda t: out.append(t) or t)  # the identity: `past` keeps its tensors
    return out


def _copy_cache(past, fn):
    """A new cache holding `fn` of each tensor; `past` is left as it was."""
    if hasattr(past, "layers"):
        new = copy.copy(past)
        new.layers = [copy.copy(layer) for layer in past.layers]
        return _map_cache(new, fn)
    if hasattr(past, "key_cache"):
        new = copy.copy(past)
        new.key_cache, new.value_cache = list(past.key_cache), list(past.value_cache)
        return _map_cache(new, fn)
    return _map_cache(past, fn)


def _select_cache(past, keep: torch.Tensor):
    """Keep batch rows `keep` of a KV cache."""
    return _map_cache(past, lambda t: t[keep])


def _compact_cache(past, attn: torch.Tensor, device: str) -> tuple[object, torch.Tensor]:
    """Squeeze the masked columns (left padding, pauses, the unused width of multi-token steps) out of
    the cache: each row keeps its valid columns in order, left-padded to the longest row. Attention
    cost and the per-step cache copy then follow the real lengths, not the step count."""
    valid = attn.bool()
    width = int(valid.sum(1).max())
    order = torch.sort(valid.to(torch.int8), dim=1, stable=True).indices[:, attn.shape[1] - width :]
    idx = order.to(device)

    def gather(t: torch.Tensor) -> torch.Tensor:
        return t.gather(2, idx[:, None, :, None].expand(t.shape[0], t.shape[1], width, t.shape[3]))

    return _map_cache(past, gather), valid.gather(1, order).long()
