"""The small interface every energy source implements.

A source owns one or more *channels* (a GPU, a CPU package, a DRAM domain) and reports, for each,
the energy in joules accumulated since `open()`. How it gets there differs per source (a hardware
counter, integrated power samples, or a power model), and each channel says which: its provenance.
The meter only subtracts readings taken at window edges; it never asks what hardware exists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Provenance = Literal["counter", "integrated", "estimated"]
Domain = Literal["gpu", "cpu", "dram"]

# Worst first: a total is only as trustworthy as its least trustworthy part.
PROVENANCE_RANK: dict[str, int] = {"counter": 0, "integrated": 1, "estimated": 2}


def worst_provenance(provenances: Iterable[str]) -> str:
    """The least trustworthy of `provenances` ("none" when there is none to rank)."""
    return max((p for p in provenances if p in PROVENANCE_RANK), key=PROVENANCE_RANK.__getitem__, default="none")


def read_period_s(sources: Iterable[EnergySource], interval_s: float) -> float:
    """How often a sampler reads `sources`: every `interval_s`, or more often where a source needs
    it (a RAPL counter before it can wrap twice, polled power to integrate)."""
    return min([interval_s] + [s.max_read_interval_s for s in sources if s.max_read_interval_s])


@dataclass(frozen=True)
class Channel:
    """One thing whose energy a source reports."""

    key: str  # unique across sources, e.g. "nvml:GPU-8a1c…", "rapl:package-0"
    domain: Domain
    label: str  # for people: "NVIDIA H100 80GB HBM3 (index 0)"
    source: str  # "nvml", "amdsmi", "rapl", "estimate"
    provenance: Provenance
    shared: bool = False  # True when other tenants draw on the same device (MIG, a VM's host CPU)
    note: str = ""
    # Other domains this channel's energy already includes: a Grace Hopper / Grace Blackwell
    # module's counter covers its CPU and memory too, so they must not be estimated on top.
    covers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reading:
    """Energy accumulated on one channel since the source was opened.

    `gaps` counts intervals that could not be measured (a failed read, a counter that went
    backwards with no known range) and were therefore left out; a window whose gap count rises
    is reported as `partial`.
    """

    energy_j: float
    gaps: int = 0


@dataclass(frozen=True)
class Probe:
    """What probing for a source found, for `wattlm devices` and for warnings."""

    source: str
    available: bool
    detail: str  # how it measures, or why it cannot, and how to fix that


class EnergySource(ABC):
    """A source of per-channel cumulative energy."""

    name: str = "source"
    # How often the underlying counter or power value refreshes; windows shorter than ten of
    # these are warned about.
    update_period_s: float = 0.0
    # The longest allowed time between two reads, or None when reads at window edges suffice.
    # RAPL counters wrap, and power integration needs samples, so those set it.
    max_read_interval_s: float | None = None
    # Said in every measurement that uses this source (e.g. a visible GPU that cannot be measured).
    warnings: tuple[str, ...] = ()

    @abstractmethod
    def channels(self) -> tuple[Channel, ...]:
        """The channels this source reports (empty for a placeholder)."""

    @abstractmethod
    def open(self) -> None:
        """Take the baseline reading; energy is accumulated from here."""

    @abstractmethod
    def read(self) -> dict[str, Reading]:
        """Cumulative energy per channel key since `open()`. Never raises for a failed read:
        the failed interval is counted in `Reading.gaps` instead."""

    def close(self) -> None:
        """Release vendor handles."""


class NullSource(EnergySource):
    """The empty placeholder returned when a vendor's hardware or library is absent."""

    def __init__(self, name: str) -> None:
        self.name = name

    def channels(self) -> tuple[Channel, ...]:
        return ()

    def open(self) -> None:
        pass

    def read(self) -> dict[str, Reading]:
        return {}


class PowerIntegrator:
    """Trapezoid integration of polled power: energy between two samples is the mean of the two
    powers times the time between them. Shared by every source that polls power."""

    def __init__(self) -> None:
        self.energy_j = 0.0
        self._last: tuple[float, float] | None = None  # (time_s, power_w)

    def add(self, time_s: float, power_w: float) -> None:
        if self._last is not None:
            last_t, last_p = self._last
            self.energy_j += 0.5 * (last_p + power_w) * max(0.0, time_s - last_t)
        self._last = (time_s, power_w)
