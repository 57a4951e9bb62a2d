"""What `wattlm ledger` runs: where it listens, where energy comes from, how long it waits to settle."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from ..listen import check_api_key, resolve_api_key


@dataclass(frozen=True)
class LedgerConfig:
    out: str
    host: str = "127.0.0.1"
    port: int = 4318
    energy_from: tuple[str, ...] = ()
    host_map: dict[str, str] = field(default_factory=dict)  # span host name -> exporter address
    settle_s: float = 30.0  # how long after an interval its spans may still arrive
    interval_s: float = 0.25  # meter reads (exporters: at least 1 s): power is constant between two
    group_by: str | None = None  # one span or resource attribute to sum energy by on /metrics
    api_key: str | None = None  # required off loopback
    work_model: tuple[float, float, float] | None = None  # (a, b, c) taken from a measured run
    fit_work_model: bool = False  # fit a and b from the spans instead of a = b
    forward: str | None = None  # OTLP/HTTP metrics endpoint that receives each request's energy
    max_body_bytes: int = 16 << 20
    stop_after_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"{{otlp}} port must be 1-65535, got {self.port}", field="otlp")
        for name in ("settle_s", "interval_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{{{name}}} must be > 0 s, got {v}", field=name)
        if self.stop_after_s is not None and not self.stop_after_s > 0:
            raise ConfigError("{stop_after_s} must be > 0 s", field="stop_after_s")
        if self.work_model is not None:
            a, b, c = self.work_model
            if not (a > 0 and b > 0 and c >= 0):
                raise ConfigError(f"{{work_model}} needs a > 0, b > 0, c >= 0, got {a},{b},{c}", field="work_model")
        check_api_key(self.api_key)
        if self.host_map and not self.energy_from:
            raise ConfigError(
                "{host_map} maps span hosts to exporters: give the exporters with --energy-from", field="host_map"
            )
        if self.max_body_bytes < 1024:
            raise ConfigError("{max_body_bytes} must be at least 1024", field="max_body_bytes")

    def resolved_api_key(self) -> str | None:
        return resolve_api_key(self.api_key)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["api_key"] = "set" if self.resolved_api_key() else None
        return data
