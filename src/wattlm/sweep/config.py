"""What `wattlm sweep` does: the server template, the grid, the load every configuration gets, the
SLO the choice must meet, the rounds. Checked whole before anything starts; JSON round-trip (the run
folder keeps it, and `--resume` reads it back)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..load.config import LoadConfig, parse_seconds
from .template import Template

SLO_METRICS = ("ttft", "itl", "tpot", "e2e")
SLO_STATS = ("p50", "p90", "p99", "mean")


def parse_slo(text: str | None) -> dict[str, float]:
    """'itl_p50=0.05,ttft_p90=2' → {"itl_p50": 0.05, "ttft_p90": 2.0} (seconds)."""

    def valid(key: str) -> bool:
        m = re.fullmatch(r"([a-z0-9]+)_([a-z0-9]+)", key)
        return m is not None and m[1] in SLO_METRICS and m[2] in SLO_STATS

    return parse_seconds(
        text,
        valid,
        f"METRIC_STAT=SECONDS pairs, metrics {', '.join(SLO_METRICS)}, stats {', '.join(SLO_STATS)};"
        " e.g. itl_p50=0.05,ttft_p90=2",
    )


@dataclass(frozen=True)
class SweepConfig:
    server: str  # a built-in name or a command with {placeholders}
    grid: dict[str, tuple[str, ...]]
    load: dict[str, Any]  # LoadConfig fields (its url is the started server's)
    model: str | None = None
    default: dict[str, str] | None = None  # a command of your own: its default configuration
    health: str | None = None  # a command of your own: the path that answers 200 when ready
    slo: dict[str, float] = field(default_factory=dict)
    rounds: int = 1
    startup_timeout_s: float = 300.0
    grace_s: float = 15.0
    version: int = 1

    def __post_init__(self) -> None:
        template = self.template()  # placeholders against the grid
        template.configurations(self.grid, self.default)
        if template.needs_model() and not self.model:
            raise ConfigError("{model}: the server command loads a model; give {model}", field="model")
        if (
            self.model
            and template.builtin
            and template.builtin.name == "llama-server"
            and not Path(self.model).is_file()
        ):
            raise ConfigError(f"{{model}} {self.model}: no such file (llama-server takes a GGUF)", field="model")
        if not (isinstance(self.rounds, int) and 1 <= self.rounds <= 100):
            raise ConfigError(f"{{rounds}} must be a whole number 1-100, got {self.rounds!r}", field="rounds")
        for name in ("startup_timeout_s", "grace_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{{{name}}} must be > 0, got {value}", field=name, value=value)
        if self.health is not None and not self.health.startswith("/"):
            raise ConfigError(f"{{health}} {self.health!r}: give a path, e.g. /health", field="health")
        self.load_config("http://127.0.0.1:1/v1")  # every load field checked now

    def template(self) -> Template:
        return Template.parse(self.server, self.grid, self.health)

    def load_config(self, url: str, server_batch: int | None = None) -> LoadConfig:
        data = dict(self.load, url=url)
        if data.get("window") == "steady" and server_batch is not None:
            clients = max(data.get("concurrencies") or [0])
            data["server_batch"] = server_batch if server_batch < clients else None
        return LoadConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["grid"] = {k: list(v) for k, v in self.grid.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepConfig:
        data = dict(data)
        data["grid"] = {k: tuple(v) for k, v in data["grid"].items()}
        return cls(**data)
