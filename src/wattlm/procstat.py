"""The machine's CPU time counters from /proc/stat (Linux): what the estimate turns into power, and
the steal time a hypervisor takes from a VM, which makes speed figures unreliable."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuTimes:
    busy_s: float  # user + nice + system + irq + softirq (guest time is inside user)
    total_s: float  # every state, all CPUs together
    steal_s: float  # time the hypervisor ran something else while this VM wanted the CPU


def parse(line: bytes, tick_s: float) -> CpuTimes:
    """The aggregate "cpu  user nice system idle iowait irq softirq steal ..." line."""
    fields = [int(x) for x in line.split()[1:9]]
    total = sum(fields)
    idle = fields[3] + fields[4] + fields[7]  # idle, iowait, steal: not this machine's work
    return CpuTimes((total - idle) * tick_s, total * tick_s, fields[7] * tick_s)


def read(path: str = "/proc/stat") -> CpuTimes | None:
    """None where /proc/stat is missing or unreadable (not Linux, a sandbox)."""
    try:
        with open(path, "rb") as f:
            return parse(f.readline(), 1.0 / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
