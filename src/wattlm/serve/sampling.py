"""Choosing the next token from a row of logits: greedy at temperature 0, otherwise softmax at that
temperature cut to the smallest set of tokens whose probability reaches `top_p` (nucleus sampling).
Each request has its own random generator, seeded from its `seed` when it gives one, so a seeded
request gives the same answer whatever else shares its batch."""

from __future__ import annotations

from typing import Any

import numpy as np

_CANDIDATES = 512  # nucleus sampling sorts only this many of the most likely tokens when they reach top_p


class Sampler:
    def __init__(self, temperature: float, top_p: float, seed: int | None) -> None:
        self.temperature, self.top_p = temperature, top_p
        self._rng = np.random.default_rng(seed)

    def __call__(self, logits: Any, banned: tuple[int, ...] = ()) -> int:
        """The next token from `logits` ([vocab] float32), never one of `banned`."""
        if banned:
            logits = logits.copy()
            logits[list(banned)] = -np.inf
        if self.temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / self.temperature
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        if self.top_p >= 1.0:
            return int(self._rng.choice(p.size, p=p))
        k = min(_CANDIDATES, p.size)
        top = np.argpartition(-p, k - 1)[:k]
        if p[top].sum() < self.top_p:  # a flat distribution: sort the whole vocabulary
            top = np.arange(p.size)
        order = top[np.argsort(-p[top], kind="stable")]
        cumulative = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cumulative, self.top_p)) + 1]
        q = p[keep] / p[keep].sum()
        return int(keep[self._rng.choice(keep.size, p=q)])
