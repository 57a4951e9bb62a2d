"""Prefix caching over the server's slots: a new request goes to the slot whose KV cells already
hold the longest prefix of its prompt, and only the rest of the prompt is read.

What is cached: every slot keeps the cells of its last request (prompt and answer) after the
request ends, so the chat template and system prompt every request shares, and the history a
multi-turn conversation resends each turn, are read once per slot instead of once per request.
When another slot — free or busy — holds a prefix longer by at least `min_copy_tokens`, its cells
are copied into the new request's slot first (llama.cpp copies one sequence's cells to another
sequence; a few milliseconds against tens of milliseconds per prompt token on a CPU).

Memory budget: the cache is the slots' own KV cells (`max_batch` × context), which serving
allocates anyway; it costs no memory of its own and never grows.
Eviction: when no free slot holds anything useful, the least recently used free slot is
overwritten, so the prefixes of recent traffic stay; a slot's cells past the matching prefix are
dropped the moment it takes a request whose prompt diverges there.

This module only decides; the scheduler applies the plan to the engine and keeps `held` true.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_COPY_TOKENS = 32  # below this, reading the tokens again costs about what a copy of the cells does


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]: halve the slices (C-speed compares)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class Placement:
    """Where a request goes: `slot`, after copying `copy_from`'s cells into it (None: no copy), keeping
    its first `reuse` cells (the prompt's first `reuse` tokens are not read again)."""

    slot: int
    reuse: int
    copy_from: int | None = None


class PrefixCache:
    """What each slot's cells hold, and when each slot was last given a request."""

    def __init__(self, slots: int, *, enabled: bool = True, min_copy_tokens: int = MIN_COPY_TOKENS) -> None:
        self.enabled, self.min_copy_tokens = enabled, min_copy_tokens
        self._held: list[list[int]] = [[] for _ in range(slots)]  # free slots' cells, token by position
        self._used = [0] * slots
        self._clock = 0
        self.hits = 0  # requests that reused at least one token
        self.lookups = 0
        self.reused_tokens = 0  # prompt tokens not read again
        self.prompt_tokens = 0
        self.copies = 0

    def place(self, prompt: Sequence[int], free: Sequence[int], busy: Mapping[int, Sequence[int]]) -> Placement:
        """The slot for `prompt` among `free` slots; `busy` gives what each busy slot's cells hold now."""
        self._clock += 1
        self.lookups += 1
        self.prompt_tokens += len(prompt)
        lru = min(free, key=lambda s: self._used[s])
        if not self.enabled:
            placement = Placement(lru, 0)
        else:
            limit = len(prompt) - 1  # the last prompt token is always read: its logits give the first token
            match = {s: min(common_prefix(prompt, self._held[s]), limit) for s in free}
            best = max(free, key=lambda s: (match[s], -self._used[s]))  # ties: the least recently used
            placement = Placement(best, match[best]) if match[best] > 0 else Placement(lru, 0)
            copies = {s: min(common_prefix(prompt, cells), limit) for s, cells in busy.items()}
            source = max(copies, key=lambda s: copies[s], default=None)
            if source is not None and copies[source] >= placement.reuse + self.min_copy_tokens:
                placement = Placement(lru, copies[source], source)
            if placement.reuse:
                self.hits += 1
                self.reused_tokens += placement.reuse
            if placement.copy_from is not None:
                self.copies += 1
        self._used[placement.slot] = self._clock
        self._held[placement.slot] = []  # busy now: the scheduler says what it holds when it is freed
        return placement

    def hold(self, slot: int, tokens: Sequence[int]) -> None:
        """Slot `slot` is free and its cells hold `tokens` at positions 0, 1, ..."""
        self._held[slot] = list(tokens) if self.enabled else []

    def forget(self, slot: int) -> None:
        self._held[slot] = []

    def stats(self) -> dict[str, float | int | bool]:
        return {
            "enabled": self.enabled,
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_rate": self.hits / self.lookups if self.lookups else 0.0,
            "cached_tokens": self.reused_tokens,
            "prompt_tokens": self.prompt_tokens,
            "token_hit_rate": self.reused_tokens / self.prompt_tokens if self.prompt_tokens else 0.0,
            "copies": self.copies,
            "min_copy_tokens": self.min_copy_tokens,
        }
