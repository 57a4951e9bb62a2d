"""The options of one bench run: validated on creation, stored in run.json, reused by --resume."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, InvalidInputError
from ..evaluate.perplexity import Protocol

SCHEMA = "wattlm.bench-config/1"


@dataclass(frozen=True)
class BenchConfig:
    model: str | None = None  # hub id, directory, .gguf file; None = the embedded default
    text: str | None = None  # UTF-8 file; None (and no dataset) = the embedded default text
    dataset: str | None = None  # NAME[:CONFIG][:SPLIT] from the Hub
    device: str = "auto"  # cpu | cuda | cuda:N | mps | auto
    trust_remote_code: bool = False
    seq_len: int = 512
    max_tokens: int = 8192
    variants: str = "fp32,bf16"
    engine: str = "hf"  # hf | llamacpp | llamacpp:TYPE — the runtime of variants that name none
    threads: int | None = None  # CPU threads of torch and llama.cpp; None = torch's default
    batch_sizes: tuple[int, ...] = (1,)
    prompt_len: int = 128
    new_tokens: int = 32
    min_phase_s: float = 3.0
    repeats: int = 3
    rounds: int = 1  # the speed phases of all variants, this many times in rotating order (intervals from 2)
    kl_windows: int = 8
    calib_text: str | None = None  # calibration text for GPTQ / SmoothQuant; None = the text after the evaluated tokens
    calib_samples: int = 128  # calibration windows of seq_len tokens
    offline: bool = False

    def __post_init__(self) -> None:
        if self.text is not None and self.dataset is not None:
            raise ConfigError("give {text} or {dataset}, not both", field="dataset", value=self.dataset)
        if self.device.split(":")[0] not in ("cpu", "cuda", "mps", "auto"):
            raise ConfigError(
                f"{{device}} {self.device!r}: use cpu, cuda, cuda:N, mps or auto", field="device", value=self.device
            )
        for name in ("seq_len", "max_tokens", "prompt_len", "repeats", "rounds", "calib_samples"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"{{{name}}} must be at least 1, got {value}", field=name, value=value)
        Protocol(self.seq_len, self.max_tokens)  # its own checks (seq_len ≥ 2, max_tokens ≥ seq_len), before any load
        if self.new_tokens < 2:
            raise ConfigError(
                f"{{new_tokens}} must be at least 2 (one from the prefill, one decoded), got {self.new_tokens}",
                field="new_tokens",
                value=self.new_tokens,
            )
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            shown = ",".join(map(str, self.batch_sizes))
            raise ConfigError(
                f"{{batch_sizes}} must be positive integers, got {shown}", field="batch_sizes", value=self.batch_sizes
            )
        if self.prompt_len > self.seq_len:
            raise ConfigError(
                f"{{prompt_len}} ({self.prompt_len}) cannot exceed {{seq_len}} ({self.seq_len})",
                field="prompt_len",
                value=self.prompt_len,
            )
        if not self.min_phase_s > 0:
            raise ConfigError(
                f"{{min_phase_s}} must be > 0, got {self.min_phase_s}", field="min_phase_s", value=self.min_phase_s
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(
                f"{{threads}} must be at least 1, got {self.threads}", field="threads", value=self.threads
            )
        if self.kl_windows < 0:
            raise ConfigError(
                f"{{kl_windows}} must be 0 or more, got {self.kl_windows}", field="kl_windows", value=self.kl_windows
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return {"schema": SCHEMA, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        if data.get("schema") != SCHEMA:
            raise InvalidInputError(
                f"the run's options are {data.get('schema')!r}, not {SCHEMA!r}: started by another wattlm version"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["batch_sizes"] = tuple(values.get("batch_sizes", (1,)))
        return cls(**values)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as e:
        raise ConfigError(
            f"{{batch_sizes}} {text!r}: give comma-separated integers, e.g. 1,4,8", field="batch_sizes", value=text
        ) from e
