"""Which GPUs this process may use, from CUDA_VISIBLE_DEVICES-style variables.

CUDA accepts indices, full or prefix `GPU-` UUIDs and `MIG-` UUIDs, comma-separated, and stops at the
first entry it cannot resolve; so do we. MIG instances are reported as their parent GPU, flagged
shared, because NVML's energy counter exists only for the whole GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Selected:
    index: int  # position in the vendor library's enumeration
    shared: bool
    note: str = ""


def select_visible(
    uuids: Sequence[str],
    spec: str | None,
    resolve_mig: Callable[[str], str | None] = lambda _uuid: None,
) -> tuple[list[Selected], list[str]]:
    """Resolve a visibility list against the enumerated GPU UUIDs.

    Args:
        uuids: UUID of each GPU, in the vendor library's order.
        spec: the variable's value, or None when unset (all GPUs visible).
        resolve_mig: maps a MIG UUID to its parent GPU's UUID, or None if unknown.

    Returns:
        The selected GPUs, deduplicated by UUID, and notes on entries that were ignored.
    """
    if spec is None:
        return [Selected(i, shared=False) for i in range(len(uuids))], []
    selected: dict[int, Selected] = {}
    notes: list[str] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            break
        hit: Selected | None = None
        if token.lstrip("-").isdigit():
            index = int(token)
            if 0 <= index < len(uuids):
                hit = Selected(index, shared=False)
        elif token.startswith("MIG-"):
            parent = resolve_mig(token)
            if parent in uuids:
                hit = Selected(uuids.index(parent), shared=True, note=f"MIG instance {token} of this GPU")
        else:
            prefix = token if token.startswith("GPU-") else f"GPU-{token}"
            matches = [i for i, u in enumerate(uuids) if u.startswith(prefix)]
            if len(matches) == 1:
                hit = Selected(matches[0], shared=False)
        if hit is None:
            notes.append(f"visible-devices entry {token!r} matches no GPU; CUDA ignores it and all entries after it")
            break
        previous = selected.get(hit.index)
        if previous is None or (hit.shared and not previous.shared):
            selected[hit.index] = hit
    return list(selected.values()), notes


def visible_spec(*names: str) -> str | None:
    """The first of the named environment variables that is set."""
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            return value
    return None
