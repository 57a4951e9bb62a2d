"""Fake /sys/class/powercap trees laid out as the Linux powercap driver lays them out."""

from __future__ import annotations

from pathlib import Path


def add_zone(root: Path, zone: str, name: str, energy_uj: int = 0, max_range_uj: int | None = 262143328850) -> Path:
    d = root / "class" / "powercap" / zone
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    if max_range_uj is not None:
        (d / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return d


def set_energy(zone_dir: Path, energy_uj: int) -> None:
    (zone_dir / "energy_uj").write_text(f"{energy_uj}\n")
