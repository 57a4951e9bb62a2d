"""What `wattlm serve` runs: which model, where it listens, how big its batches and queue may grow.

Every field is checked here, before the model loads; errors name the field (the CLI turns the name
into its flag).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from ..listen import check_api_key, resolve_api_key
from ..variants.cache import Calibration

ENGINES = ("llamacpp", "hf")
SCHEDULES = ("auto", "interleave", "prefill-first")
DEFAULT_LEDGER = "wattlm-serve-ledger.jsonl"


@dataclass(frozen=True)
class ServeConfig:
    model: str | None = None  # a .gguf file or a model folder; None: the embedded default
    variant: str | None = None  # gguf-source (a GGUF's own file) or a gguf-<type> export
    engine: str | None = None  # llamacpp or hf; None: the one the variant runs in
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # required off loopback; every request must then send it
    max_batch: int = 8  # sequences decoded together in one step
    max_queue: int = 64  # requests waiting for a slot; one more is answered 429
    max_prompt_tokens: int = 1536
    max_new_tokens: int = 512
    step_tokens: int = 256  # tokens per engine step: decode tokens first, prompt chunks fill the rest
    slo_tpot_s: float | None = None  # let the scheduler cap the batch at the most efficient size meeting it
    slo_ttft_s: float | None = None  # a time-to-first-token deadline: picks the interleaving schedule
    schedule: str = "auto"  # interleave (chunked prefill) | prefill-first (whole prompts) | auto: from the SLOs
    prefill_tokens: int = 2048  # prefill-first: the most prompt tokens one step reads (in step_tokens chunks)
    prefix_cache: bool = True  # reuse the cells of a prompt's longest cached prefix
    drain_s: float = 30.0  # after SIGTERM, how long in-flight requests may take to finish
    ledger: str | None = None  # JSONL file, one line per request (default: ./wattlm-serve-ledger.jsonl)
    interval_s: float = 0.1  # meter sampling interval: the grain of the energy split
    threads: int | None = None  # engine threads (default: the CPUs this process may use)
    attribution: bool = True  # split energy per request (off only to measure what it costs)
    max_body_bytes: int = 1 << 20
    otlp_traces_endpoint: str | None = None  # send one span per request there (OTLP/HTTP), as vLLM does
    calibration: Calibration = field(default_factory=Calibration)  # of a calibrated variant (bench's by default)

    def __post_init__(self) -> None:
        if self.engine is not None and self.engine not in ENGINES:
            raise ConfigError(f"{{engine}} {self.engine!r} is not one of {', '.join(ENGINES)}", field="engine")
        if not 0 < self.port < 65536:
            raise ConfigError(f"{{port}} must be 1-65535, got {self.port}", field="port")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"{{schedule}} {self.schedule!r} is not one of {', '.join(SCHEDULES)}", field="schedule")
        for name in (
            "max_batch",
            "max_queue",
            "max_prompt_tokens",
            "max_new_tokens",
            "step_tokens",
            "prefill_tokens",
            "max_body_bytes",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{{{name}}} must be a whole number ≥ 1, got {value!r}", field=name)
        if self.step_tokens < self.max_batch:
            raise ConfigError(
                f"{{step_tokens}} ({self.step_tokens}) must hold one decode token per sequence of {{max_batch}}"
                f" ({self.max_batch})",
                field="step_tokens",
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"{{threads}} must be ≥ 1, got {self.threads}", field="threads")
        for name in ("drain_s", "interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{{{name}}} must be > 0 s, got {value}", field=name)
        for name in ("slo_tpot_s", "slo_ttft_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{{{name}}} must be > 0 s, got {value}", field=name)
        if self.prefill_tokens < self.step_tokens:
            raise ConfigError(
                f"{{prefill_tokens}} ({self.prefill_tokens}) must be at least {{step_tokens}} ({self.step_tokens})",
                field="prefill_tokens",
            )
        check_api_key(self.api_key)

    @property
    def resolved_schedule(self) -> str:
        """The schedule `auto` stands for: prefill-first under a TPOT deadline alone (most decode
        steps carry no prompt tokens; an arriving prompt stalls the running sequences once, for one
        long step), interleave otherwise (prompt chunks share every step: first tokens come soonest)."""
        if self.schedule != "auto":
            return self.schedule
        return "prefill-first" if self.slo_tpot_s is not None and self.slo_ttft_s is None else "interleave"

    @property
    def engine_tokens(self) -> int:
        """The most tokens one engine call takes."""
        return self.prefill_tokens if self.resolved_schedule == "prefill-first" else self.step_tokens

    @property
    def seq_ctx(self) -> int:
        """KV cells per sequence: its prompt and its answer."""
        return self.max_prompt_tokens + self.max_new_tokens

    def resolved_api_key(self) -> str | None:
        return resolve_api_key(self.api_key)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["api_key"] = "set" if self.resolved_api_key() else None  # never written out
        return data
