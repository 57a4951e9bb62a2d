"""What `wattlm load` does: which server, which load levels, which prompts, which SLOs.

Every field is checked here, before any request is sent; errors name the field (the CLI turns the
name into its flag).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

APIS = ("chat", "completions")
WINDOWS = ("fixed", "steady")
ARRIVALS = ("poisson", "constant")
SLO_KEYS = ("ttft", "tpot", "itl", "e2e")  # seconds; itl is the request's p99 inter-token gap


@dataclass(frozen=True)
class Lengths:
    """A token count, fixed (`128`) or drawn uniformly from an inclusive range (`64:256`)."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str | int, name: str) -> Lengths:
        raw = str(text).strip()
        lo, sep, hi = raw.partition(":")
        try:
            low, high = int(lo), int(hi) if sep else int(lo)
        except ValueError as e:
            raise ConfigError(f"{{{name}}} {raw!r}: give a token count (128) or a range (64:256)", field=name) from e
        if low < 1 or high < low:
            raise ConfigError(f"{{{name}}} {raw!r}: counts are ≥ 1 and a range goes low:high", field=name)
        return cls(low, high)

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"


def parse_levels(text: str, name: str, *, integer: bool) -> tuple[float, ...]:
    """'1,2,4' → (1.0, 2.0, 4.0); every value > 0 (concurrencies whole numbers)."""
    values = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        try:
            value = float(part)
        except ValueError as e:
            raise ConfigError(f"{{{name}}} {text!r}: give numbers separated by commas, e.g. 1,2,4", field=name) from e
        if not (math.isfinite(value) and value > 0) or (integer and value != int(value)):
            kind = "whole numbers ≥ 1" if integer else "numbers > 0"
            raise ConfigError(f"{{{name}}} {text!r}: every level must be {kind}, got {part}", field=name)
        values.append(value)
    if not values:
        raise ConfigError(f"{{{name}}} is empty: give at least one level, e.g. 1,2,4", field=name)
    return tuple(values)


def parse_seconds(text: str | None, valid: Callable[[str], bool], wanted: str) -> dict[str, float]:
    """'KEY=SECONDS,…' → {key: seconds > 0} for the {slo} field; keys lower-cased, each checked by `valid`;
    `wanted` says in the error what to give."""
    out: dict[str, float] = {}
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        try:
            seconds = float(value.strip().removesuffix("s"))
        except ValueError:
            seconds = -1.0
        if not sep or not valid(key) or not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"{{slo}} {text!r}: give {wanted}", field="slo")
        out[key] = seconds
    return out


def parse_slo(text: str | None) -> dict[str, float]:
    """'ttft=0.5,tpot=0.05' → {"ttft": 0.5, "tpot": 0.05} (seconds)."""
    return parse_seconds(
        text, lambda key: key in SLO_KEYS, f"KEY=SECONDS pairs with keys {', '.join(SLO_KEYS)}, e.g. ttft=0.5,tpot=0.05"
    )


@dataclass(frozen=True)
class LoadConfig:
    url: str
    model: str | None = None  # None: the first model the server lists
    api: str = "chat"
    rates: tuple[float, ...] = ()  # requests/s, open loop
    concurrencies: tuple[float, ...] = ()  # closed loop
    arrival: str = "poisson"
    burstiness: float = 1.0  # gamma shape: 1 is Poisson, < 1 burstier, > 1 smoother
    duration_s: float = 30.0
    requests: int | None = None  # measured requests per level instead of a duration
    warmup_s: float = 5.0
    input_len: Lengths = field(default_factory=lambda: Lengths(128, 128))
    output_len: Lengths = field(default_factory=lambda: Lengths(128, 128))
    prompts: Path | None = None
    text: Path | None = None
    turns: int = 1  # user turns per conversation, each resending the history with the model's answers
    system_prompt_len: int = 0  # tokens of one system prompt every drawn conversation shares (0: none)
    slo: dict[str, float] = field(default_factory=dict)
    idle_s: float = 0.0
    timeout_s: float = 120.0
    energy_from: tuple[str, ...] = ()
    stream: bool = True
    seed: int = 0
    interval_s: float = 0.1
    window: str = "fixed"  # fixed: warm-up then duration_s (or N requests); steady: while the batch is full
    server_batch: int | None = None  # steady: sequences the server runs at once, when fewer than the clients
    version: int = 1

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{{url}} {self.url!r}: give the server's base URL, e.g. http://127.0.0.1:8000/v1", field="url"
            )
        if self.api not in APIS:
            raise ConfigError(f"{{api}} {self.api!r}: use one of {', '.join(APIS)}", field="api")
        if self.arrival not in ARRIVALS:
            raise ConfigError(f"{{arrival}} {self.arrival!r}: use one of {', '.join(ARRIVALS)}", field="arrival")
        if bool(self.rates) == bool(self.concurrencies):
            raise ConfigError("give either {rates} or {concurrencies} (one load level per value)", field="rates")
        for name in ("burstiness", "duration_s", "timeout_s", "interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{{{name}}} must be > 0, got {value}", field=name, value=value)
        for name in ("warmup_s", "idle_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{{{name}}} must be ≥ 0, got {value}", field=name, value=value)
        if not (isinstance(self.turns, int) and 1 <= self.turns <= 1000):
            raise ConfigError(f"{{turns}} must be a whole number 1-1000, got {self.turns!r}", field="turns")
        if not (isinstance(self.system_prompt_len, int) and self.system_prompt_len >= 0):
            raise ConfigError(
                f"{{system_prompt_len}} must be a whole number ≥ 0, got {self.system_prompt_len!r}",
                field="system_prompt_len",
            )
        if self.system_prompt_len and self.prompts is not None:
            raise ConfigError(
                "{system_prompt_len} draws a system prompt from the text; a {prompts} file brings its own",
                field="system_prompt_len",
            )
        if self.window not in WINDOWS:
            raise ConfigError(f"{{window}} {self.window!r}: use one of {', '.join(WINDOWS)}", field="window")
        if self.window == "steady" and (self.rates or self.requests is None):
            raise ConfigError(
                "{window} steady measures closed-loop clients sharing a fixed number of requests: give"
                " {concurrencies} and {requests} (e.g. 8 clients, 64 requests)",
                field="window",
            )
        if self.server_batch is not None and (self.window != "steady" or self.server_batch < 1):
            raise ConfigError(
                "{server_batch} (≥ 1) tells the steady window how many sequences the server runs at once;"
                " it needs {window} steady",
                field="server_batch",
                value=self.server_batch,
            )
        if self.requests is not None and self.requests < 1:
            raise ConfigError(f"{{requests}} must be ≥ 1, got {self.requests}", field="requests", value=self.requests)
        for name in ("prompts", "text"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{{{name}}} {path}: no such file", field=name, value=path)
        if self.prompts is not None and self.text is not None:
            raise ConfigError("give {prompts} or {text}, not both", field="prompts")

    @property
    def mode(self) -> str:
        return "rate" if self.rates else "concurrency"

    @property
    def levels(self) -> tuple[float, ...]:
        return self.rates or self.concurrencies

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("input_len", "output_len"):
            data[name] = str(getattr(self, name))
        for name in ("prompts", "text"):
            data[name] = None if data[name] is None else str(data[name])
        data["rates"], data["concurrencies"] = list(self.rates), list(self.concurrencies)
        data["energy_from"] = list(self.energy_from)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadConfig:
        data = dict(data)
        for name in ("input_len", "output_len"):
            data[name] = Lengths.parse(data[name], name)
        for name in ("prompts", "text"):
            data[name] = None if data.get(name) is None else Path(data[name])
        for name in ("rates", "concurrencies", "energy_from"):
            data[name] = tuple(data.get(name) or ())
        return cls(**data)
