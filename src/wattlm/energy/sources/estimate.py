"""The labelled estimate used where no counter can be read (VMs, containers, RAPL access denied).

Power model, stated so a reader can check it:

  CPU power = TDP_share × (idle_fraction + (1 − idle_fraction) × utilisation)
      TDP_share   = TDP of the host CPU (table data/cpu_tdp.csv) × visible vCPUs / host threads
      utilisation = busy share of the visible CPUs between two reads (psutil, system-wide;
                    steal time is not ours and counts as idle)
      idle_fraction = 0.3: server CPUs draw roughly a quarter to a third of TDP when idle; an assumption.
  DRAM power = 0.375 W per GiB of memory this machine has (3 W per 8 GiB DIMM, a common planning
      figure for DDR4/DDR5 RDIMMs), constant: DRAM refresh dominates and load adds little.

The figures are estimates, labelled `estimated` in every result, and every measurement that uses them
carries a warning that says why no counter was used.
"""

from __future__ import annotations

import csv
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .base import Channel, EnergySource, Reading

IDLE_FRACTION = 0.3
DRAM_W_PER_GIB = 0.375
# Used when the CPU matches no row: a mid-range figure per hardware thread of current server CPUs
# (e.g. 360 W / 192 threads ≈ 1.9 W, 205 W / 56 ≈ 3.7 W; desktops run higher). Loudly labelled.
GENERIC_W_PER_THREAD = 4.0


@dataclass(frozen=True)
class CpuIdentity:
    model_name: str
    vendor: str
    family: int | None
    model: int | None
    logical_cpus: int


@dataclass(frozen=True)
class CpuSpec:
    name: str
    tdp_w: float
    threads: int | None  # hardware threads of the host socket; None when unknown
    source: str
    matched_by: str  # "model name", "cpuid family/model" or "generic"


def identify_cpu(cpuinfo_path: str | Path = "/proc/cpuinfo") -> CpuIdentity:
    """Read the CPU model, vendor and CPUID family/model from /proc/cpuinfo (Linux)."""
    from ...cpuinfo import first_processor, model_name

    fields = first_processor(cpuinfo_path)

    def as_int(key: str) -> int | None:
        value = fields.get(key, "")
        return int(value) if value.isdigit() else None

    return CpuIdentity(
        model_name=model_name(fields),
        vendor=fields.get("vendor_id", ""),
        family=as_int("cpu family"),
        model=as_int("model"),
        logical_cpus=os.cpu_count() or 1,
    )


def load_cpu_table() -> list[dict[str, str]]:
    text = resources.files("wattlm.energy").joinpath("data/cpu_tdp.csv").read_text()
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


def lookup_cpu(cpu: CpuIdentity, table: list[dict[str, str]] | None = None) -> CpuSpec:
    """Find the TDP row for a CPU: by model name first, then by CPUID family/model, then generic."""
    rows = load_cpu_table() if table is None else table
    cpuid = f"cpuid:{cpu.vendor}:{cpu.family}:{cpu.model}"
    for matched_by, hit in (
        ("model name", lambda m: not m.startswith("cpuid:") and re.search(m, cpu.model_name)),
        ("cpuid family/model", lambda m: m == cpuid),
    ):
        for row in rows:
            if hit(row["match"]):
                return CpuSpec(row["name"], float(row["tdp_w"]), int(row["threads"]), row["source"], matched_by)
    return CpuSpec(
        name=f"{cpu.model_name} (not in the table)",
        tdp_w=GENERIC_W_PER_THREAD * cpu.logical_cpus,
        threads=None,
        source=f"generic {GENERIC_W_PER_THREAD:g} W per hardware thread",
        matched_by="generic",
    )


def cpu_share(spec: CpuSpec, visible_cpus: int) -> float:
    """Share of the host CPU's TDP this machine can draw on (1.0 when the host is unknown)."""
    if spec.threads is None:
        return 1.0
    return min(1.0, visible_cpus / spec.threads)


def cpu_power_w(spec: CpuSpec, visible_cpus: int, utilisation: float, idle_fraction: float = IDLE_FRACTION) -> float:
    """The model's CPU power at a utilisation in [0, 1]."""
    u = min(1.0, max(0.0, utilisation))
    return spec.tdp_w * cpu_share(spec, visible_cpus) * (idle_fraction + (1.0 - idle_fraction) * u)


def dram_power_w(memory_bytes: int) -> float:
    return DRAM_W_PER_GIB * memory_bytes / 2**30


class CpuTimes:
    """System-wide (busy, total) CPU seconds; steal and I/O wait count as idle.

    On Linux the first line of /proc/stat is read with one pread on a file kept open: psutil opens,
    reads and closes the file, and each of those system calls hands the GIL to and from the measured
    program, which tripled the sampler's CPU cost at 10 Hz (0.47 % vs 0.29 % of a busy core, measured
    on a 2-vCPU VM). Elsewhere psutil is used.
    """

    def __init__(self, path: str = "/proc/stat") -> None:
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY)
            self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
            self()
        except (OSError, ValueError, IndexError):
            self.close()

    def __call__(self) -> tuple[float, float]:
        if self._fd is None:
            import psutil

            t = psutil.cpu_times()
            idle = t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)
            return sum(t) - idle, sum(t)
        from ...procstat import parse

        times = parse(os.pread(self._fd, 256, 0).split(b"\n", 1)[0], self._tick_s)
        return times.busy_s, times.total_s

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class EstimateSource(EnergySource):
    """CPU and/or DRAM energy from the power model above, integrated over measured utilisation."""

    name = "estimate"

    def __init__(
        self,
        spec: CpuSpec,
        visible_cpus: int,
        memory_bytes: int,
        *,
        cpu: bool = True,
        dram: bool = True,
        interval_s: float = 0.1,
        cpu_times: Callable[[], tuple[float, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec, self.visible_cpus, self.memory_bytes = spec, visible_cpus, memory_bytes
        self._cpu, self._dram = cpu, dram
        self._cpu_times, self._clock = cpu_times or CpuTimes(), clock
        # Utilisation is averaged between reads, so reading at the meter interval gives the
        # power's time profile (peaks) as well as its integral.
        self.max_read_interval_s = interval_s
        self.update_period_s = 0.01  # /proc/stat counts CPU time in 10 ms clock ticks (USER_HZ = 100)
        share = cpu_share(spec, visible_cpus)
        channels = []
        if cpu:
            channels.append(
                Channel(
                    key="estimate:cpu",
                    domain="cpu",
                    label=f"{spec.name}, {visible_cpus} of {spec.threads or '?'} threads (share {share:.3g})",
                    source="estimate",
                    provenance="estimated",
                    shared=spec.threads is not None and share < 1.0,
                    note=f"TDP {spec.tdp_w:g} W from {spec.source}; matched by {spec.matched_by}",
                )
            )
        if dram:
            channels.append(
                Channel(
                    key="estimate:dram",
                    domain="dram",
                    label=f"DRAM {memory_bytes / 2**30:.1f} GiB",
                    source="estimate",
                    provenance="estimated",
                    note=f"{DRAM_W_PER_GIB} W/GiB",
                )
            )
        self._channels = tuple(channels)
        self._cpu_j = self._dram_j = 0.0
        self._last: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (time_s, busy_s, total_s)

    def channels(self) -> tuple[Channel, ...]:
        return self._channels

    @property
    def j_per_cpu_s(self) -> float | None:
        """Estimated CPU energy of one CPU-second of work (the model's dynamic part): what a process
        that used that much CPU time added to the estimate. None when CPU is not estimated here."""
        if not self._cpu:
            return None
        busy, idle = cpu_power_w(self.spec, self.visible_cpus, 1.0), cpu_power_w(self.spec, self.visible_cpus, 0.0)
        return (busy - idle) / self.visible_cpus

    def close(self) -> None:
        if isinstance(self._cpu_times, CpuTimes):
            self._cpu_times.close()

    def open(self) -> None:
        self._cpu_j = self._dram_j = 0.0
        self._last = (self._clock(), *self._cpu_times())

    def read(self) -> dict[str, Reading]:
        now = self._clock()
        busy, total = self._cpu_times()
        last_t, last_busy, last_total = self._last
        dt = max(0.0, now - last_t)
        d_total = total - last_total
        utilisation = (busy - last_busy) / d_total if d_total > 0 else 0.0
        self._cpu_j += cpu_power_w(self.spec, self.visible_cpus, utilisation) * dt
        self._dram_j += dram_power_w(self.memory_bytes) * dt
        self._last = (now, busy, total)
        out = {}
        if self._cpu:
            out["estimate:cpu"] = Reading(self._cpu_j)
        if self._dram:
            out["estimate:dram"] = Reading(self._dram_j)
        return out
