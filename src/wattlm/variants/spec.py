"""Variants: spec strings such as `fp32`, `bf16+compile` or `wanda50+int8`, resolved here.

A spec is steps joined by `+`, applied in order to a fresh copy of the model. Each step name is
matched against the name patterns of the step modules listed in STEP_MODULES (precision and
compile; compression; llama.cpp engines), each a STEPS table, so the harness never changes when a
step is added; scripts may add their own with `register(...)`. A step that sets the precision says
so (`dtype`); a spec without one runs in fp32. `compile` always runs last.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..errors import ConfigError, InvalidInputError
from .step import Context, Step

__all__ = ["Context", "Step", "Variant", "register", "resolve", "resolve_all", "with_engine"]

# The modules that define the built-in steps, each as a STEPS list of (name pattern, make(match)).
# An explicit table: those modules import only variants.step, never this module.
STEP_MODULES: tuple[str, ...] = (
    "wattlm.variants.precision_steps",
    "wattlm.variants.compress_steps",
    "wattlm.variants.engine_steps",
)


@dataclass(frozen=True)
class Variant:
    spec: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def dtype(self) -> str:
        return next((s.dtype for s in self.steps if s.dtype), "fp32")

    @property
    def engine(self) -> str:
        return next((s.engine for s in self.steps if s.engine), "hf")  # hf | llamacpp | ort

    @property
    def calibrated(self) -> bool:
        return any(s.calibrated for s in self.steps)

    def warnings(self, device: Any) -> list[str]:
        return [f"{self.spec}: {w}" for w in (s.warning(device) for s in self.steps) if w]

    def build(self, model: Any, context: Context) -> Any:
        for step in self.steps:
            model = step.apply(model, context)
        return model


_EXACT: dict[str, Callable[[], Step]] = {}  # steps added with register(): scripts comparing other libraries
_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Step]]] = []


def register(name_or_pattern: str, make: Callable[..., Step], *, pattern: bool = False) -> None:
    """Add a step beside the built-in ones. `make()` (or `make(match)` for a pattern) returns the Step."""
    if pattern:
        _PATTERNS.append((re.compile(name_or_pattern), make))
    else:
        _EXACT[name_or_pattern] = make


@lru_cache(maxsize=1)
def _builtin() -> tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], Step]], ...]:
    return tuple((re.compile(p), make) for module in STEP_MODULES for p, make in importlib.import_module(module).STEPS)


def known() -> list[str]:
    return [p.pattern for p, _ in _builtin()] + sorted(_EXACT) + [p.pattern for p, _ in _PATTERNS]


def _make(name: str) -> Step | None:
    if name in _EXACT:
        return _EXACT[name]()
    for regex, make in (*_builtin(), *_PATTERNS):
        match = regex.fullmatch(name)
        if match:
            return make(match)
    return None


def resolve(spec: str, device: Any = None) -> Variant:
    """Turn a spec string into a Variant, or say which step is unknown and what exists."""
    names = [part.strip() for part in spec.split("+")]
    if not spec.strip() or any(not n for n in names):
        raise InvalidInputError(f"variant {spec!r} is empty or has an empty step; write e.g. fp32 or bf16+compile")
    steps = []
    for name in names:
        step = _make(name)
        if step is None:
            raise InvalidInputError(f"unknown variant step {name!r} in {spec!r}; known: {', '.join(known())}")
        steps.append(step)
    if sum(1 for s in steps if s.dtype) > 1:
        raise InvalidInputError(f"variant {spec!r} sets the precision twice; use one of fp32, bf16, fp16")
    if any(s.name == "compile" for s in steps[:-1]):
        raise InvalidInputError(f"in {spec!r}, compile must be the last step (e.g. bf16+compile)")
    if any(s.engine for s in steps[:-1]):
        raise InvalidInputError(
            f"in {spec!r}, the engine step (gguf-*, ort-*) must be the last one (e.g. struct25+gguf-q4_k_m)"
        )
    if any(s.alone for s in steps) and len(steps) > 1:
        raise InvalidInputError(
            f"{spec!r}: gguf-source runs the model's own file as it is; it cannot follow other steps"
        )
    variant = Variant(spec, tuple(steps))
    if device is not None:
        check_dtype(variant.dtype, device)
    return variant


def resolve_all(specs: str, device: Any = None) -> list[Variant]:
    variants = [resolve(s, device) for s in specs.split(",")]
    seen = set()
    for v in variants:
        if v.spec in seen:
            raise ConfigError(f"variant {v.spec!r} is listed twice in {{variants}}", field="variants")
        seen.add(v.spec)
    return variants


def with_engine(specs: str, engine: str) -> str:
    """`--engine llamacpp[:TYPE]`: every variant without an engine step gets `+gguf-TYPE` (f32 by default);
    `--engine ort[:TYPE]`: `+ort-TYPE` (fp32 by default)."""
    if engine == "hf":
        return specs
    name, _, quant = engine.partition(":")
    if name not in ("llamacpp", "ort"):
        raise ConfigError(
            f"{{engine}} {engine!r}: use hf, llamacpp, llamacpp:TYPE (e.g. llamacpp:q4_k_m), ort or ort:TYPE"
            " (e.g. ort:int4)",
            field="engine",
        )
    step = f"gguf-{quant or 'f32'}" if name == "llamacpp" else f"ort-{quant or 'fp32'}"
    out = []
    for spec in specs.split(","):
        has_engine = any(p.strip().startswith(("gguf-", "llamacpp:", "ort-")) for p in spec.split("+"))
        out.append(spec if has_engine else f"{spec}+{step}")
    return ",".join(out)


def check_dtype(dtype: str, device: Any) -> None:
    import torch

    if dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidInputError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}; use fp16 or fp32")
