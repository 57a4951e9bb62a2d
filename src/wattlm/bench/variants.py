"""Variants: spec strings such as `fp32`, `bf16+compile` or (later) `wanda50+int8`, resolved here.

A spec is steps joined by `+`, applied in order to a fresh copy of the model. Each step name is
looked up in a registry of exact names and patterns (`wanda(\\d+)`), so the quantization and
pruning modules add theirs with `register(...)` and the harness never changes. A step that sets
the precision says so (`dtype`); a spec without one runs in fp32. `compile` always runs last.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError

# Modules whose import registers more steps (quantization, pruning, ...): listed here, not in the harness.
PLUGIN_MODULES: tuple[str, ...] = ("wattlm.bench.compress_steps", "wattlm.bench.engine_steps")


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


@dataclass(frozen=True)
class Variant:
    spec: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def dtype(self) -> str:
        return next((s.dtype for s in self.steps if s.dtype), "fp32")

    @property
    def engine(self) -> str:
        return next((s.engine for s in self.steps if s.engine), "hf")

    @property
    def calibrated(self) -> bool:
        return any(s.calibrated for s in self.steps)

    def warnings(self, device: Any) -> list[str]:
        return [f"{self.spec}: {w}" for w in (s.warning(device) for s in self.steps) if w]

    def build(self, model: Any, context: Context) -> Any:
        for step in self.steps:
            model = step.apply(model, context)
        return model


_EXACT: dict[str, Callable[[], Step]] = {}
_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Step]]] = []


def register(name_or_pattern: str, make: Callable[..., Step], *, pattern: bool = False) -> None:
    """Register a step. `make()` (or `make(match)` for a pattern) returns the Step."""
    if pattern:
        _PATTERNS.append((re.compile(name_or_pattern), make))
    else:
        _EXACT[name_or_pattern] = make


def _load_plugins() -> None:
    for module in PLUGIN_MODULES:
        importlib.import_module(module)


def known() -> list[str]:
    _load_plugins()
    return sorted(_EXACT) + [p.pattern for p, _ in _PATTERNS]


def resolve(spec: str, device: Any = None) -> Variant:
    """Turn a spec string into a Variant, or say which step is unknown and what exists."""
    _load_plugins()
    names = [part.strip() for part in spec.split("+")]
    if not spec.strip() or any(not n for n in names):
        raise InvalidInputError(f"variant {spec!r} is empty or has an empty step; write e.g. fp32 or bf16+compile")
    steps = []
    for name in names:
        if name in _EXACT:
            steps.append(_EXACT[name]())
            continue
        for regex, make in _PATTERNS:
            match = regex.fullmatch(name)
            if match:
                steps.append(make(match))
                break
        else:
            raise InvalidInputError(f"unknown variant step {name!r} in {spec!r}; known: {', '.join(known())}")
    if sum(1 for s in steps if s.dtype) > 1:
        raise InvalidInputError(f"variant {spec!r} sets the precision twice; use one of fp32, bf16, fp16")
    if any(s.name == "compile" for s in steps[:-1]):
        raise InvalidInputError(f"in {spec!r}, compile must be the last step (e.g. bf16+compile)")
    if any(s.engine for s in steps[:-1]):
        raise InvalidInputError(f"in {spec!r}, the gguf step must be the last one (e.g. struct25+gguf-q4_k_m)")
    if any(s.alone for s in steps) and len(steps) > 1:
        raise InvalidInputError(f"{spec!r}: gguf-source runs the model's own file as it is; it cannot follow other steps")
    variant = Variant(spec, tuple(steps))
    if device is not None:
        check_dtype(variant.dtype, device)
    return variant


def resolve_all(specs: str, device: Any = None) -> list[Variant]:
    variants = [resolve(s, device) for s in specs.split(",")]
    seen = set()
    for v in variants:
        if v.spec in seen:
            raise InvalidInputError(f"variant {v.spec!r} is listed twice in --variants")
        seen.add(v.spec)
    return variants


def with_engine(specs: str, engine: str) -> str:
    """`--engine llamacpp[:TYPE]`: every variant without an engine step gets `+gguf-TYPE` (f32 by default)."""
    if engine == "hf":
        return specs
    name, _, quant = engine.partition(":")
    if name != "llamacpp":
        raise InvalidInputError(f"--engine {engine!r}: use hf, llamacpp or llamacpp:TYPE (e.g. llamacpp:q4_k_m)")
    step = f"gguf-{quant or 'f32'}"
    out = []
    for spec in specs.split(","):
        has_engine = any(p.strip().startswith(("gguf-", "llamacpp:")) for p in spec.split("+"))
        out.append(spec if has_engine else f"{spec}+{step}")
    return ",".join(out)


def check_dtype(dtype: str, device: Any) -> None:
    import torch

    if dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidInputError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}; use fp16 or fp32")


# -- built-in steps ------------------------------------------------------------------------------


def _precision(dtype: str) -> Step:
    def apply(model: Any, context: Context) -> Any:
        from ..models.load import torch_dtype

        return model.to(torch_dtype(dtype))

    return Step(dtype, apply, dtype=dtype, doc=f"weights and activations in {dtype}")


def _compile() -> Step:
    def apply(model: Any, context: Context) -> Any:
        import torch

        # dynamic=True: decoding grows the KV cache by one position per step; without it every
        # length would be a new graph.
        model.forward = torch.compile(model.forward, dynamic=True)
        return model

    return Step("compile", apply, doc="torch.compile of the forward pass (compiled during warm-up)")


for _dtype in ("fp32", "bf16", "fp16"):
    register(_dtype, lambda d=_dtype: _precision(d))
register("compile", _compile)
