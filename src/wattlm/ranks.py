"""Processes under torchrun: who is who, the collectives wattlm uses, and who meters what.

Energy is counted once per physical device: each rank meters its own GPU (the local_rank-th one it
can see), and only local rank 0 of each machine meters the machine's CPU and DRAM, which all ranks
on it share. Used by bench (sharded evaluation) and train (DDP, local SGD).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .energy.sources.base import Channel, EnergySource, Reading
from .listen import free_port


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The torchrun layout from its environment variables (a single process without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(dist: Dist, device: Any) -> None:
    if not dist.active:
        return
    import torch.distributed as td

    if not td.is_initialized():
        td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def shutdown(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()


def gather(obj: Any, dist: Dist) -> list[Any]:
    if not dist.active:
        return [obj]
    import torch.distributed as td

    out: list[Any] = [None] * dist.world
    td.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, dist: Dist) -> Any:
    """Rank 0's `obj` on every rank."""
    if not dist.active:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def barrier(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td

        td.barrier()


class _Subset(EnergySource):
    """Some channels of a source: the ones this rank is responsible for."""

    def __init__(self, source: EnergySource, keys: set[str]) -> None:
        self.inner, self.keys = source, keys
        self.name = source.name
        self.update_period_s = source.update_period_s
        self.max_read_interval_s = source.max_read_interval_s
        self.warnings = source.warnings

    def channels(self) -> tuple[Channel, ...]:
        return tuple(c for c in self.inner.channels() if c.key in self.keys)

    def open(self) -> None:
        self.inner.open()

    def read(self) -> dict[str, Reading]:
        return {k: r for k, r in self.inner.read().items() if k in self.keys}

    def close(self) -> None:
        self.inner.close()


def rank_sources(sources: tuple[EnergySource, ...], dist: Dist) -> tuple[EnergySource, ...]:
    """The sources (narrowed to channels) that this rank meters."""
    if not dist.active:
        return sources
    gpus = [c for s in sources for c in s.channels() if c.domain == "gpu"]
    mine = {gpus[dist.local_rank].key} if dist.local_rank < len(gpus) else set()
    if dist.local_rank == 0:
        mine |= {c.key for s in sources for c in s.channels() if c.domain != "gpu"}
    out = []
    for s in sources:
        keys = {c.key for c in s.channels()} & mine
        if keys:
            out.append(_Subset(s, keys))
    return tuple(out)


def launch_local(nproc: int, entry: Callable[..., Any], *args: Any) -> dict[int, Any]:
    """Run `entry(*args)` in `nproc` processes on this machine through torch's launcher API
    (torch.distributed.launcher), as torchrun would: each process finds its rank in the environment.

    Returns each rank's return value. A process that raised raises ChildFailedError here.
    """
    import logging
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    port = free_port()  # on loopback, for the rendezvous
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{port}",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # The launcher logs its configuration and each failed worker; a failure is reported by the caller.
    elastic = logging.getLogger("torch.distributed.elastic")
    level = elastic.level
    elastic.setLevel(logging.CRITICAL)
    try:
        return elastic_launch(config, entry)(*args)
    finally:
        elastic.setLevel(level)
