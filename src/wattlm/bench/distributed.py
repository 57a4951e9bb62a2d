"""Running bench under torchrun: shard the evaluation windows across ranks and add the results up.

Rank 0 gathers every rank's measurements and sums them (see wattlm.ranks for who meters what). The
latency phases (prefill, decode) describe one device serving requests, so rank 0 runs them alone
while the others wait.
"""

from __future__ import annotations

from typing import Any

from ..evaluate.quality import QualitySums
from ..ranks import Dist, barrier, broadcast, from_env, gather, init, rank_sources, shutdown

__all__ = [
    "Dist",
    "barrier",
    "broadcast",
    "from_env",
    "gather",
    "init",
    "rank_sources",
    "shutdown",
    "shard",
    "sum_quality",
]


def shard(windows: Any, dist: Dist) -> tuple[Any, list[int]]:
    """This rank's windows (every world-th, starting at rank) and their protocol indices."""
    indices = list(range(dist.rank, windows.shape[0], dist.world))
    return windows[indices], indices


def sum_quality(sums: QualitySums, dist: Dist) -> QualitySums:
    if not dist.active:
        return sums
    import torch
    import torch.distributed as td

    # float64 holds every count here exactly (they are far below 2**53).
    t = torch.tensor(sums.as_tuple(), dtype=torch.float64)
    td.all_reduce(t)
    values = t.tolist()
    return QualitySums(
        values[0], int(values[1]), int(values[2]), values[3], int(values[4]), int(values[5]), int(values[6])
    )
