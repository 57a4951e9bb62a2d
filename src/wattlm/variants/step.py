"""What a bench variant is made of: steps (one transformation of the model each) and their context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Context:
    """What a step may need besides the model."""

    device: Any  # torch.device the variant runs on
    calibration: Any = None  # [n, seq_len] token ids, given when a step of the run is `calibrated`
    tokenizer: Any = None
    model_name: str | None = None
    source_gguf: Any = None  # Path of the model's own .gguf file, when it was loaded from one
    threads: int = 1  # CPU threads an engine step gives its runtime (the same as torch's)
    probe_text: str = ""  # a sample of the run's text, for checks such as an export's tokenization


@dataclass(frozen=True)
class Step:
    name: str
    apply: Callable[[Any, Context], Any]  # returns the (possibly new) model
    dtype: str | None = None  # "fp32", "bf16", "fp16" for precision steps
    doc: str = ""
    calibrated: bool = False  # needs Context.calibration (text the variant is not evaluated on)
    preflight: Callable[[Any], str | None] | None = None  # (device) -> a warning to show before the run, or raise
    engine: str | None = None  # "llamacpp": the step hands the model to that runtime (it must come last)
    alone: bool = False  # the step is the whole variant (e.g. gguf-source runs a file as it is)

    def warning(self, device: Any) -> str | None:
        return self.preflight(device) if self.preflight is not None else None
