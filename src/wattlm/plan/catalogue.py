"""The hardware catalogue (data/hardware.csv): power, peak throughput per precision, memory and
bandwidth of common accelerators and server CPUs, each row with its source."""

from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..errors import ConfigError, InvalidInputError

PRECISIONS = ("fp32", "bf16", "fp16", "fp8", "int8")
# (static, memory-bound, compute-bound) power as shares of the TDP for devices without measured levels
LOAD_FRACTIONS = (0.2, 0.63, 0.95)
BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class Hardware:
    name: str
    kind: str  # "gpu", "tpu", "cpu"
    tdp_w: float | None
    idle_w: float | None
    peak_tflops: dict[str, float]  # precision -> dense peak (TOPS for int8); missing = not published / unsupported
    memory_gb: float | None
    bandwidth_gb_s: float
    source: str
    # Power under load, per device (W): serving but waiting, streaming memory, saturated compute.
    # Empty in the CSV: fractions of the TDP (LOAD_FRACTIONS), and power_source says so.
    static_w: float | None = None
    memory_bound_w: float | None = None
    compute_bound_w: float | None = None
    power_source: str = ""
    interconnect_gb_s: float | None = None  # device-to-device bandwidth, one direction (NVLink, Infinity Fabric)

    def peak_flops(self, precision: str) -> float:
        """Dense peak in FLOP/s for `precision` (int4 weights compute at the int8 rate where given)."""
        key = "int8" if precision == "int4" else precision
        tflops = self.peak_tflops.get(key)
        if tflops is None:
            have = ", ".join(self.peak_tflops) or "none"
            raise ConfigError(
                f"{self.name} has no published {key} peak (it has: {have}); choose {{precision}} from those",
                field="precision",
            )
        return tflops * 1e12

    def power_w(self, given: float | None) -> tuple[float, str]:
        """(watts, where the figure comes from): a given average, else the TDP."""
        if given is not None:
            return given, "given (--power-w)"
        if self.tdp_w is None:
            raise ConfigError(
                f"{self.name}: its power is not published; give the average power per device with {{power_w}}",
                field="power_w",
            )
        return self.tdp_w, f"TDP of {self.name}"

    def power_levels(self) -> tuple[float, float, float]:
        """(static, memory-bound, compute-bound) watts: measured where the catalogue has them, else
        fractions of the TDP; a device without a published power asks for --power-w upstream."""
        if self.static_w is not None and self.memory_bound_w is not None and self.compute_bound_w is not None:
            return self.static_w, self.memory_bound_w, self.compute_bound_w
        if self.tdp_w is None:
            raise ConfigError(
                f"{self.name}: its power is not published; give the average power per device with {{power_w}}",
                field="power_w",
            )
        return tuple(f * self.tdp_w for f in LOAD_FRACTIONS)  # type: ignore[return-value]

    def power_levels_source(self) -> str:
        if self.static_w is not None and self.memory_bound_w is not None and self.compute_bound_w is not None:
            return self.power_source
        static, memory, compute = LOAD_FRACTIONS
        return (
            f"shares of the TDP {self.tdp_w:g} W: static {static:g} (assumed), memory-bound {memory:g} (measured:"
            " batch-1 decode of 7-8B models on A100 and H100, Argonne LLM-Inference-Bench), compute-bound"
            f" {compute:g} (assumed: tensor-core-bound work runs near the power limit)"
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "tdp_w": self.tdp_w,
            "idle_w": self.idle_w,
            "peak_tflops": self.peak_tflops,
            "memory_gb": self.memory_gb,
            "bandwidth_gb_s": self.bandwidth_gb_s,
            "source": self.source,
            "static_w": self.static_w,
            "memory_bound_w": self.memory_bound_w,
            "compute_bound_w": self.compute_bound_w,
            "power_source": self.power_source,
            "interconnect_gb_s": self.interconnect_gb_s,
        }


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9+]", "", name.lower())


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, Hardware], dict[str, str]]:
    """(name -> row, normalised name or alias -> name), from one read of the CSV."""
    text = resources.files("wattlm.plan").joinpath("data/hardware.csv").read_text()
    table, names = {}, {}
    for row in csv.DictReader(line for line in text.splitlines() if not line.startswith("#")):
        peaks = {
            p: v for p in PRECISIONS if (v := _number(row[f"{p}_tflops" if p != "int8" else "int8_tops"])) is not None
        }
        table[row["name"]] = Hardware(
            row["name"],
            row["kind"],
            _number(row["tdp_w"]),
            _number(row["idle_w"]),
            peaks,
            _number(row["memory_gb"]),
            float(row["bandwidth_gb_s"]),
            row["source"],
            _number(row["static_w"]),
            _number(row["memory_bound_w"]),
            _number(row["compute_bound_w"]),
            row["power_source"],
            _number(row["interconnect_gb_s"]),
        )
        for alias in [row["name"], *filter(None, row["aliases"].split(";"))]:
            names[_key(alias)] = row["name"]
    return table, names


def catalogue() -> dict[str, Hardware]:
    return _load()[0]


def _names() -> dict[str, str]:
    return _load()[1]


def lookup(name: str) -> Hardware:
    """The catalogue row for `name` or one of its aliases (case, spaces and dashes ignored); an
    unknown name is an error that lists the closest ones."""
    found = _names().get(_key(name))
    if found is None:
        close = difflib.get_close_matches(_key(name), list(_names()), n=4, cutoff=0.4)
        suggestions = list(dict.fromkeys(_names()[c] for c in close))
        hint = f"closest: {', '.join(suggestions)}" if suggestions else f"known: {', '.join(catalogue())}"
        raise InvalidInputError(f"unknown hardware {name!r}; {hint} (or `wattlm plan hardware` for the list)")
    return catalogue()[found]
