"""The result of one measurement window: a frozen record with a versioned JSON form.

The JSON layout is described by `measurement.schema.json` beside this file; `SCHEMA` names its
version, and readers refuse versions they do not know.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError
from ..units import j_to_kwh
from .facility import CarbonIntensity, FacilityResult

SCHEMA = "wattlm.measurement/1"
STATUSES = ("ok", "partial", "failed")


@dataclass(frozen=True)
class DeviceEnergy:
    key: str
    domain: str  # gpu | cpu | dram
    label: str
    source: str  # nvml | amdsmi | rapl | estimate
    provenance: str  # counter | integrated | estimated
    energy_j: float
    shared: bool = False
    gaps: int = 0  # intervals that could not be measured and are missing from energy_j
    note: str = ""


@dataclass(frozen=True)
class Work:
    tokens: int | None = None
    flops: float | None = None


@dataclass(frozen=True)
class IdleSplit:
    """Static (idle baseline × duration) and dynamic (the rest) energy."""

    idle_power_w: float
    static_energy_j: float
    dynamic_energy_j: float


@dataclass(frozen=True)
class Measurement:
    name: str
    status: str  # ok | partial | failed
    reason: str  # why not ok; empty when ok
    start_time: str  # ISO 8601, UTC
    end_time: str
    duration_s: float
    devices: tuple[DeviceEnergy, ...]
    gpu_energy_j: float | None  # None: no device of that domain was measured
    cpu_energy_j: float | None
    dram_energy_j: float | None
    it_energy_j: float
    provenance: str  # the least trustworthy provenance among the devices ("none" without devices)
    avg_power_w: float
    peak_power_w: float | None  # highest IT power between two consecutive samples
    samples: int
    facility: FacilityResult
    work: Work = field(default_factory=Work)
    idle: IdleSplit | None = None
    warnings: tuple[str, ...] = ()
    process_cpu_s: float | None = None  # CPU time of the measuring process inside the window
    steal_fraction: float | None = None  # share of the machine's CPU time a hypervisor took (None: unknown)
    schema: str = SCHEMA

    @property
    def facility_energy_j(self) -> float:
        return self.facility.facility_energy_j

    @property
    def co2e_g(self) -> float:
        return self.facility.co2e_g

    @property
    def cost(self) -> float | None:
        return self.facility.cost

    @property
    def tokens_per_j(self) -> float | None:
        """Tokens per joule of IT energy (an energy efficiency η, with units)."""
        if self.work.tokens is None or self.it_energy_j <= 0:
            return None
        return self.work.tokens / self.it_energy_j

    @property
    def flop_per_j(self) -> float | None:
        if self.work.flops is None or self.it_energy_j <= 0:
            return None
        return self.work.flops / self.it_energy_j

    def with_work(self, tokens: int | None = None, flops: float | None = None) -> Measurement:
        """A copy with the work done in the window, for tokens/J and FLOP/J."""
        return dataclasses.replace(self, work=Work(tokens=tokens, flops=flops))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["devices"] = list(data["devices"])
        data["warnings"] = list(self.warnings)
        data["it_energy_kwh"] = j_to_kwh(self.it_energy_j)
        data["tokens_per_j"] = self.tokens_per_j
        data["flop_per_j"] = self.flop_per_j
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        if data.get("schema") != SCHEMA:
            raise InvalidInputError(
                f"measurement schema {data.get('schema')!r} is not {SCHEMA!r}: written by another wattlm version"
            )
        fac = dict(data["facility"])
        fac["carbon"] = CarbonIntensity(**fac["carbon"])
        nested = {"devices", "facility", "work", "idle", "warnings", "schema"}
        # Fields added later have defaults, so records written before them still read.
        plain = {
            f.name: data[f.name] if f.default is dataclasses.MISSING else data.get(f.name, f.default)
            for f in dataclasses.fields(cls)
            if f.name not in nested
        }
        return cls(
            **plain,
            devices=tuple(DeviceEnergy(**d) for d in data["devices"]),
            facility=FacilityResult(**fac),
            work=Work(**data["work"]),
            idle=IdleSplit(**data["idle"]) if data.get("idle") else None,
            warnings=tuple(data["warnings"]),
        )

    @classmethod
    def from_json(cls, text: str) -> Measurement:
        return cls.from_dict(json.loads(text))
