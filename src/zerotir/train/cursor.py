"""The data cursor: which rows a step trains on, reproducible from (seed, position) alone.

Epoch e visits the rows in a fixed shuffled order (seeded by seed·7919 + e), so a resumed run that
restores `pos` draws exactly the rows the uninterrupted run would have.
"""

from __future__ import annotations

import random


class DataCursor:
    def __init__(self, rows: list[dict], seed: int, shuffle: bool = True, pos: int = 0):
        if not rows:
            raise ValueError("no training rows: check data.train")
        self.rows, self.seed, self.shuffle, self.pos = rows, seed, shuffle, pos
        self._order_cache: tuple[int, list[int]] | None = None

    def take(self, n: int) -> list[dict]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.pos, len(self.rows))
            out.append(self.rows[self._order(epoch)[i]])
            self.pos += 1
        return out

    def _order(self, epoch: int) -> list[int]:
        if self._order_cache is None or self._order_cache[0] != epoch:
            idx = list(range(len(self.rows)))
            if self.shuffle:
                random.Random(self.seed * 7919 + epoch).shuffle(idx)
            self._order_cache = (epoch, idx)
        return self._order_cache[1]
