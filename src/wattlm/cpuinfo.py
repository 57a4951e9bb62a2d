"""The one reader of /proc/cpuinfo: the first processor's fields (model name, vendor, CPUID family
and model, feature flags). Used by the CPU energy estimate, the run environment and the kernel plans."""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path


def first_processor(path: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """Fields of the first processor block ({} where the file cannot be read: not Linux)."""
    fields: dict[str, str] = {}
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def model_name(fields: dict[str, str]) -> str:
    """The CPU's marketing name, or what the platform says where /proc/cpuinfo has none (Arm, macOS)."""
    return fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def flags(fields: dict[str, str]) -> frozenset[str]:
    """Feature flags (x86 `flags`, Arm `Features`)."""
    return frozenset((fields.get("flags") or fields.get("Features") or "").split())


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags, read once."""
    return flags(first_processor())
