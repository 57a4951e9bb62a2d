"""The probing factory: find every energy source on this machine, and say why where none.

GPUs come from NVML and amdsmi, CPU packages and DRAM from RAPL. A domain that no counter covers
(CPU, DRAM) is estimated, and every measurement then carries a warning that says so and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .sources.amdsmi import probe_amdsmi
from .sources.base import EnergySource, Probe
from .sources.estimate import DRAM_W_PER_GIB, IDLE_FRACTION, EstimateSource, cpu_share, identify_cpu, lookup_cpu
from .sources.nvml import probe_nvml
from .sources.rapl import probe_rapl


@dataclass(frozen=True)
class Discovery:
    sources: tuple[EnergySource, ...]
    probes: tuple[Probe, ...]


def discover(
    *,
    interval_s: float = 0.1,
    sysfs_root: str | Path = "/sys",
    cpuinfo_path: str | Path = "/proc/cpuinfo",
    memory_bytes: int | None = None,
) -> Discovery:
    """Probe every source. Sources that found nothing are left out; their probes say why."""
    probed = [probe_nvml(interval_s), probe_amdsmi(interval_s), probe_rapl(sysfs_root)]
    sources = [source for source, _ in probed if source.channels()]
    probes = [probe for _, probe in probed]
    counted = {d for source in sources for channel in source.channels() for d in (channel.domain, *channel.covers)}
    missing = [domain for domain in ("cpu", "dram") if domain not in counted]
    if missing:
        import psutil

        cpu = identify_cpu(cpuinfo_path)
        spec = lookup_cpu(cpu)
        mem = memory_bytes if memory_bytes is not None else psutil.virtual_memory().total
        estimate = EstimateSource(
            spec, cpu.logical_cpus, mem, cpu="cpu" in missing, dram="dram" in missing, interval_s=interval_s
        )
        rapl_probe = probes[2]
        why = (
            f"RAPL has no {' or '.join(missing)} domain here"
            if rapl_probe.available
            else f"no CPU energy counter is readable (RAPL: {rapl_probe.detail})"
        )
        model = (
            f"CPU: {spec.name}, TDP {spec.tdp_w:g} W × share {cpu_share(spec, cpu.logical_cpus):.3g} "
            f"({cpu.logical_cpus} vCPUs) × ({IDLE_FRACTION:g} + {1 - IDLE_FRACTION:g}·utilisation)"
            if "cpu" in missing
            else ""
        )
        if "dram" in missing:
            model += ("; " if model else "") + f"DRAM: {DRAM_W_PER_GIB} W/GiB × {mem / 2**30:.1f} GiB"
        estimate.warnings = (
            f"{' and '.join(missing).upper()} energy is ESTIMATED, not measured: {why}. Model: {model}",
        )
        sources.append(estimate)
        probes.append(Probe("estimate", True, f"power model for {', '.join(missing)}: {model}"))
    else:
        probes.append(Probe("estimate", False, "not needed: counters cover CPU and DRAM"))
    return Discovery(tuple(sources), tuple(probes))
