"""What a serving loop hands an engine for one step: the tokens of each sequence it advances."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchItem:
    """Tokens of one sequence in one engine call: they sit at positions start_pos, start_pos+1, ...
    `logits` asks for the next-token logits after the last of them."""

    slot: int
    tokens: tuple[int, ...]
    start_pos: int
    logits: bool
