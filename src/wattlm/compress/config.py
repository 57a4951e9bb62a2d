"""Quantization configs: small validated dataclasses, one per technique, that round-trip to JSON.

`config_from_name("gptq4-g128")` turns a stable variant name into its config, so the bench step
names, `wattlm compress --technique` and the saved metadata all describe a scheme the same way.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import InvalidInputError

SCHEMA = "wattlm.compress-config/1"
DEFAULT_KEEP: tuple[str, ...] = ()  # every nn.Linear, lm_head included: it is the largest matmul of a small model


def _check_keep(keep: tuple[str, ...]) -> None:
    if isinstance(keep, str) or not isinstance(keep, (list, tuple)) or any(not isinstance(k, str) or not k for k in keep):
        raise InvalidInputError(f"keep must be a list of module-name patterns such as ['lm_head', '*.mlp.down_proj'], got {keep!r}")


def _check_group(group_size: int) -> None:
    if group_size < 0 or (group_size and (group_size < 8 or group_size & (group_size - 1))):
        raise InvalidInputError(f"group size must be a power of two ≥ 8 (e.g. 32, 64, 128), or 0 for one group per row; got {group_size}")


@dataclass(frozen=True)
class QuantConfig:
    """Common to every technique. `keep`: fnmatch patterns of module names left in higher precision."""

    technique: ClassVar[str] = ""
    calibrated: ClassVar[bool] = False
    keep: tuple[str, ...] = DEFAULT_KEEP

    def __post_init__(self) -> None:
        _check_keep(self.keep)
        object.__setattr__(self, "keep", tuple(self.keep))

    @property
    def name(self) -> str:
        """The stable variant name of this config (`int8`, `gptq4-g128`, ...)."""
        return self.technique

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["keep"] = list(self.keep)
        return {"schema": SCHEMA, "technique": self.technique, **data}


@dataclass(frozen=True)
class Int8WeightConfig(QuantConfig):
    """int8 weights, one symmetric scale per output channel; activations stay in floating point."""

    technique: ClassVar[str] = "int8"


@dataclass(frozen=True)
class W8A8Config(QuantConfig):
    """int8 weights (per output channel) and int8 activations (per token, dynamic), int32 accumulation.

    `smooth`: SmoothQuant — move activation outliers into the weights with per-channel scales
    s = max|X|^α / max|W|^(1-α), folded into the preceding norm (or up-projection). `alpha` None
    means calibrated: the α in `alpha_grid` with the smallest output error is chosen per layer.
    """

    technique: ClassVar[str] = "w8a8"
    smooth: bool = False
    alpha: float | None = None
    alpha_grid: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)

    @property
    def calibrated(self) -> bool:  # type: ignore[override]
        return self.smooth

    @property
    def name(self) -> str:
        return "w8a8-smooth" if self.smooth else "w8a8"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "alpha_grid", tuple(self.alpha_grid))
        for a in ([self.alpha] if self.alpha is not None else []) + list(self.alpha_grid):
            if not 0.0 <= a <= 1.0:
                raise InvalidInputError(f"SmoothQuant alpha must lie in [0, 1], got {a}")
        if self.alpha is not None and not self.smooth:
            raise InvalidInputError("alpha only applies with smooth=True (w8a8-smooth)")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["alpha_grid"] = list(self.alpha_grid)
        return data


@dataclass(frozen=True)
class Int4WeightConfig(QuantConfig):
    """int4 weights, round-to-nearest, one scale (and zero point unless symmetric) per group of inputs."""

    technique: ClassVar[str] = "int4"
    group_size: int = 128
    symmetric: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_group(self.group_size)
        if self.group_size == 0:
            raise InvalidInputError("int4 needs a group size (e.g. 32, 64, 128): one scale per row loses too much")

    @property
    def name(self) -> str:
        return f"int4-g{self.group_size}" + ("" if self.symmetric else "-asym")


@dataclass(frozen=True)
class GPTQConfig(QuantConfig):
    """GPTQ (Frantar et al. 2022): quantize one input column at a time and spread its rounding error
    over the not-yet-quantized columns through the inverse Hessian of the layer's inputs, H = 2XᵀX.
    Layer by layer: each decoder layer sees the outputs of the already-quantized layers before it.
    bits 2-4: group-wise, int4 layers; bits 8 (`gptq8`): per output channel, the int8 layers and kernel."""

    technique: ClassVar[str] = "gptq"
    calibrated: ClassVar[bool] = True
    bits: int = 4
    group_size: int = 128
    symmetric: bool = True
    damp: float = 0.01  # fraction of mean(diag H) added to the diagonal, for a stable Cholesky
    block_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits not in (2, 3, 4, 8):
            raise InvalidInputError(f"GPTQ bits must be 2, 3, 4 or 8, got {self.bits}")
        _check_group(self.group_size)
        if self.bits == 8 and (self.group_size or not self.symmetric):
            raise InvalidInputError("gptq8 is per output channel and symmetric (the int8 kernel's layout): leave out the group size and --asymmetric")
        if self.bits < 8 and self.group_size == 0:
            raise InvalidInputError(f"GPTQ at {self.bits} bits needs a group size (e.g. 32, 64, 128)")
        if not 0 < self.damp < 1:
            raise InvalidInputError(f"GPTQ damp must lie in (0, 1), got {self.damp}")
        if self.block_size < 1:
            raise InvalidInputError(f"GPTQ block size must be positive, got {self.block_size}")

    @property
    def name(self) -> str:
        if self.bits == 8:
            return "gptq8"
        return f"gptq{self.bits}-g{self.group_size}" + ("" if self.symmetric else "-asym")


@dataclass(frozen=True)
class FP8Config(QuantConfig):
    """fp8 (e4m3) weights with one scale per output channel and dynamic per-token fp8 activations,
    multiplied by the GPU's fp8 tensor cores (compute capability 8.9 or newer)."""

    technique: ClassVar[str] = "fp8"


CONFIGS: dict[str, type[QuantConfig]] = {c.technique: c for c in (Int8WeightConfig, W8A8Config, Int4WeightConfig, GPTQConfig, FP8Config)}

# Stable variant names → config. Group sizes and bits are read from the name.
NAME_PATTERNS: tuple[tuple[str, Any], ...] = (
    (r"int8", lambda m: Int8WeightConfig()),
    (r"w8a8", lambda m: W8A8Config()),
    (r"w8a8-smooth", lambda m: W8A8Config(smooth=True)),
    (r"int4-g(\d+)(-asym)?", lambda m: Int4WeightConfig(group_size=int(m[1]), symmetric=not m[2])),
    (r"gptq(\d)-g(\d+)(-asym)?", lambda m: GPTQConfig(bits=int(m[1]), group_size=int(m[2]), symmetric=not m[3])),
    (r"gptq8", lambda m: GPTQConfig(bits=8, group_size=0)),
    (r"fp8", lambda m: FP8Config()),
)


def config_from_name(name: str, **overrides: Any) -> QuantConfig:
    """`int8`, `w8a8-smooth`, `int4-g128`, `gptq4-g128`, `gptq3-g64-asym`, `fp8` → config."""
    for pattern, make in NAME_PATTERNS:
        match = re.fullmatch(pattern, name)
        if match:
            config = make(match)
            return dataclasses.replace(config, **overrides) if overrides else config
    raise InvalidInputError(f"unknown quantization {name!r}; use one of int8, w8a8, w8a8-smooth, int4-g<G>, gptq<bits>-g<G>, gptq8, fp8")


def config_from_dict(data: dict[str, Any]) -> QuantConfig:
    if data.get("schema") != SCHEMA:
        raise InvalidInputError(f"quantization config schema {data.get('schema')!r} is not {SCHEMA!r}: written by another wattlm version")
    cls = CONFIGS.get(data.get("technique", ""))
    if cls is None:
        raise InvalidInputError(f"unknown quantization technique {data.get('technique')!r}; known: {', '.join(CONFIGS)}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names - {"schema", "technique"}
    if unknown:
        raise InvalidInputError(f"unknown field(s) {', '.join(sorted(unknown))} in a {cls.technique} config")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**values)
