"""Intel and AMD CPU energy from RAPL counters exposed by Linux powercap (`/sys/class/powercap`).

Counted domains are CPU packages and DRAM. `core`/`uncore` are parts of the package and `psys`
covers the whole platform, so adding any of them to the package would count energy twice; psys is
used only when no package domain exists. Some Intel platforms expose the package twice, through
MSRs (`intel-rapl:N`) and MMIO (`intel-rapl-mmio:N`): the MSR copy is kept.

`energy_uj` wraps after `max_energy_range_uj`; the source asks the meter to read it often enough
that at most one wrap can pass between two reads, and adds the range back when it sees one. When
the range cannot be read, a backwards step is dropped as a gap rather than turned into a negative.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...units import counter_delta, uj_to_j, uw_to_w
from .base import Channel, EnergySource, NullSource, Probe, Reading

# Used when a zone states no maximum power: far above any single CPU package or DRAM domain.
_ASSUMED_MAX_POWER_W = 1000.0
# Reads per wrap period: four gives a wide margin for a late sampler thread.
_READS_PER_WRAP = 4.0
_UNKNOWN_RANGE_READ_S = 1.0
_PERMISSION_FIX = (
    "energy_uj is readable by root only on Linux ≥ 5.10 (CVE-2020-8694). Grant read access with "
    "`sudo chmod a+r /sys/class/powercap/intel-rapl*/energy_uj /sys/class/powercap/intel-rapl*/*/energy_uj` "
    "(until reboot) or a udev rule, or run as root"
)
_ZONE_DIR = re.compile(r"^(intel-rapl|intel-rapl-mmio):(\d+)(?::(\d+))?$")


@dataclass
class _Zone:
    path: Path
    key: str
    domain: str  # "cpu" or "dram"
    label: str
    modulus_uj: int | None
    max_power_w: float
    last_raw_uj: int = 0
    total_uj: int = 0
    gaps: int = 0


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def _read_optional_int(path: Path) -> int | None:
    try:
        return _read_int(path)
    except (OSError, ValueError):
        return None


def _scan_zones(powercap: Path) -> list[_Zone]:
    """Find countable zones, dropping sub-domains and duplicate copies."""
    found: dict[tuple[str, int], tuple[int, _Zone]] = {}  # (domain name, socket) -> (priority, zone)
    psys: list[_Zone] = []
    for entry in sorted(powercap.iterdir()):
        match = _ZONE_DIR.match(entry.name)
        if not match:
            continue
        interface, socket = match.group(1), int(match.group(2))
        try:
            name = (entry / "name").read_text().strip()
        except OSError:
            continue
        if name.startswith("package"):
            domain, label = "cpu", f"CPU {name} (RAPL)"
        elif name == "dram":
            domain, label = "dram", f"DRAM socket {socket} (RAPL)"
        elif name == "psys":
            domain, label = "cpu", f"platform psys {socket} (RAPL)"
        else:  # core, uncore: already inside the package
            continue
        max_range = _read_optional_int(entry / "max_energy_range_uj")
        max_power_uw = _read_optional_int(entry / "constraint_0_max_power_uw")
        zone = _Zone(
            path=entry / "energy_uj",
            key=f"rapl:{name}" if name != "dram" else f"rapl:dram-{socket}",
            domain=domain,
            label=label,
            modulus_uj=None if max_range is None else max_range + 1,
            max_power_w=uw_to_w(max_power_uw) if max_power_uw else _ASSUMED_MAX_POWER_W,
        )
        if name == "psys":
            psys.append(zone)
            continue
        priority = 0 if interface == "intel-rapl" else 1  # MSR copy before MMIO copy
        slot = (name, socket)
        if slot not in found or priority < found[slot][0]:
            found[slot] = (priority, zone)
    zones = [zone for _, zone in found.values()]
    if not any(z.domain == "cpu" for z in zones):
        zones.extend(psys)
    return zones


class RaplSource(EnergySource):
    name = "rapl"
    update_period_s = 0.001  # RAPL status registers refresh about every millisecond

    def __init__(self, zones: list[_Zone]) -> None:
        self._zones = zones
        # Read each zone at least four times per wrap at its maximum power. A zone whose range is
        # unknown cannot have a wrap corrected; reading it every second keeps the interval that has
        # to be dropped short, even beside zones that could be read far less often.
        self.max_read_interval_s = min(
            uj_to_j(z.modulus_uj) / z.max_power_w / _READS_PER_WRAP if z.modulus_uj else _UNKNOWN_RANGE_READ_S
            for z in zones
        )
        self._channels = tuple(
            Channel(key=z.key, domain=z.domain, label=z.label, source="rapl", provenance="counter")  # type: ignore[arg-type]
            for z in zones
        )

    def channels(self) -> tuple[Channel, ...]:
        return self._channels

    def open(self) -> None:
        for zone in self._zones:
            zone.last_raw_uj = _read_int(zone.path)
            zone.total_uj = 0
            zone.gaps = 0

    def read(self) -> dict[str, Reading]:
        out = {}
        for zone in self._zones:
            try:
                raw = _read_int(zone.path)
            except (OSError, ValueError):
                zone.gaps += 1
            else:
                delta = counter_delta(zone.last_raw_uj, raw, zone.modulus_uj)
                if delta is None:
                    zone.gaps += 1  # went backwards with no known range: drop, never negative
                else:
                    zone.total_uj += delta
                zone.last_raw_uj = raw
            out[zone.key] = Reading(uj_to_j(zone.total_uj), zone.gaps)
        return out


def probe_rapl(sysfs_root: str | Path = "/sys") -> tuple[EnergySource, Probe]:
    """Open RAPL under `sysfs_root`, or return a placeholder and the reason it cannot be used."""
    powercap = Path(sysfs_root) / "class" / "powercap"
    if not powercap.is_dir():
        return NullSource("rapl"), Probe(
            "rapl", False, f"{powercap} does not exist (no RAPL driver; usual inside VMs and containers)"
        )
    zones = _scan_zones(powercap)
    if not zones:
        return NullSource("rapl"), Probe("rapl", False, f"no package or dram RAPL zone under {powercap}")
    try:
        source = RaplSource(zones)
        source.open()
    except PermissionError:
        return NullSource("rapl"), Probe("rapl", False, f"permission denied reading {zones[0].path}: {_PERMISSION_FIX}")
    except (OSError, ValueError) as e:
        return NullSource("rapl"), Probe("rapl", False, f"cannot read {powercap}: {e}")
    unknown_range = [z.key for z in zones if z.modulus_uj is None]
    detail = "counter (energy_uj) for " + ", ".join(z.label for z in zones)
    detail += f"; read every ≤ {source.max_read_interval_s:.3g} s so no wrap passes unseen"
    if unknown_range:
        detail += f"; max_energy_range_uj unreadable for {', '.join(unknown_range)}: wrapped intervals are dropped"
    return source, Probe("rapl", True, detail)
