"""Compression configs (quantization, pruning, parameter sharing): small validated dataclasses, one
per technique, that round-trip to JSON.

`config_from_name("gptq4-g128")` or `config_from_name("wanda-2:4")` turns a stable variant name into
its config, so the bench step names, `wattlm compress --technique` and the saved metadata all describe
a scheme the same way.
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
    if (
        isinstance(keep, str)
        or not isinstance(keep, (list, tuple))
        or any(not isinstance(k, str) or not k for k in keep)
    ):
        raise InvalidInputError(
            f"keep must be a list of module-name patterns such as ['lm_head', '*.mlp.down_proj'], got {keep!r}"
        )


def _check_group(group_size: int) -> None:
    if group_size < 0 or (group_size and (group_size < 8 or group_size & (group_size - 1))):
        raise InvalidInputError(
            f"group size must be a power of two ≥ 8 (e.g. 32, 64, 128), or 0 for one group per row; got {group_size}"
        )


@dataclass(frozen=True)
class CompressConfig:
    """Common to every technique. `keep`: fnmatch patterns of module names left as they are."""

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
class QuantConfig(CompressConfig):
    """A quantization: `keep` lists the modules left in higher precision."""


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
            raise InvalidInputError(
                "gptq8 is per output channel and symmetric (the int8 kernel's layout): leave out the group size and"
                " --asymmetric"
            )
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


# -- pruning and parameter sharing ----------------------------------------------------------------

PRUNE_KEEP: tuple[str, ...] = (
    "lm_head",
)  # tied to the embedding in most small models: pruning it prunes the input too
CALIBRATED_METHODS = ("taylor", "fisher", "wanda", "sparsegpt")
METHODS = ("magnitude", "l2shrink", *CALIBRATED_METHODS)
SCOPES = ("layer", "row", "global")


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.10g}"


@dataclass(frozen=True)
class PruneConfig(CompressConfig):
    """Unstructured or N:M pruning of the linear layers (lm_head kept by default).

    method — the importance of each weight:
        magnitude  |w|, zero the least (L1: zero below a threshold, set by `sparsity`)
        l2shrink   |w|, the least important scaled by |w|/threshold instead of zeroed (L2
                   "proportional shrink"); it makes no zeros, so it saves no size or time
        taylor     |w · ∂L/∂w|, gradients of the calibration loss (first-order Taylor)
        fisher     ½ · w² · F, F the mean squared gradient over calibration batches (second order)
        wanda      |w| · ‖x‖₂ per input channel (Sun et al. 2023), no weight update
        sparsegpt  OBS mask with the remaining weights updated through the inverse input Hessian
                   (Frantar & Alistarh 2023), layer by layer
    sparsity — fraction zeroed, in [0, 1). n:m — at most n non-zeros in every m consecutive inputs
    (2:4 is 50 %). scope — where `sparsity` holds exactly: each `layer`, each output `row`, or
    `global`ly across layers; empty means the method's own (wanda: row, others: layer).
    """

    technique: ClassVar[str] = "prune"
    keep: tuple[str, ...] = PRUNE_KEEP
    method: str = "magnitude"
    sparsity: float = 0.5
    n: int = 0
    m: int = 0
    scope: str = ""
    damp: float = 0.01  # sparsegpt: fraction of mean(diag H) added to the diagonal
    block_size: int = 128  # sparsegpt: columns whose mask is chosen together

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise InvalidInputError(f"unknown pruning method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.n or self.m:
            if not 1 <= self.n < self.m:
                raise InvalidInputError(
                    f"N:M sparsity needs 1 ≤ N < M (N non-zeros kept in every M weights), got {self.n}:{self.m}"
                )
            if self.scope:
                raise InvalidInputError("an N:M pattern holds in every group of M inputs: leave out the scope")
            object.__setattr__(self, "sparsity", 1 - self.n / self.m)
        if not isinstance(self.sparsity, (int, float)) or not 0 <= self.sparsity < 1:
            raise InvalidInputError(f"sparsity must lie in [0, 1) (0.5 = half the weights zeroed), got {self.sparsity}")
        if self.scope and self.scope not in SCOPES:
            raise InvalidInputError(f"pruning scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.scope == self._default_scope():
            object.__setattr__(self, "scope", "")  # one spelling per config, so names round-trip
        if self.method in ("sparsegpt", "wanda") and self.scope == "global":
            raise InvalidInputError(
                f"{self.method} prunes layer by layer, each on the outputs of the pruned layers before it: use scope"
                " layer or row"
            )
        if self.method == "sparsegpt" and self.scope == "row":
            raise InvalidInputError("sparsegpt chooses its mask per block of columns of each layer: use scope layer")
        if not 0 < self.damp < 1 or self.block_size < 1:
            raise InvalidInputError(
                f"sparsegpt needs damp in (0, 1) and a positive block size, got {self.damp}, {self.block_size}"
            )

    @property
    def calibrated(self) -> bool:  # type: ignore[override]
        return self.method in CALIBRATED_METHODS

    def _default_scope(self) -> str:
        return "row" if self.method == "wanda" else "layer"

    @property
    def effective_scope(self) -> str:
        return self.scope or self._default_scope()

    @property
    def name(self) -> str:
        if self.m:
            return f"{self.method}-{self.n}:{self.m}"
        return f"{self.method}{_percent(self.sparsity)}" + (f"-{self.scope}" if self.scope else "")


STRUCT_UNITS = ("width", "layers")
IMPORTANCES = ("activation", "taylor")


@dataclass(frozen=True)
class StructuredConfig(CompressConfig):
    """Structured removal of `fraction` of the model's parameters (tied weights counted once), leaving
    a smaller dense model that transformers reloads as it is.

    unit — `width`: attention heads and MLP channels, the same number in every layer (so the standard
    config describes the result); heads are removed only while at least one query head per key/value
    head remains, the rest of the share comes from MLP channels. `layers`: whole decoder layers.
    importance — `activation`: ‖x‖₂·‖w‖ of a head's / channel's inputs to o_proj / down_proj
    (layers: 1 − cos(input, output) of the layer, Men et al. 2024); `taylor`: Σ|w · ∂L/∂w| over the
    unit's weights. heads — width only: the query heads to remove from every layer (a multiple of
    the key/value heads); -1 lets the fraction decide (heads while at least one query head per
    key/value head remains, rounded down, the rest from MLP channels).
    `keep` does not apply: every decoder layer keeps one shape.
    """

    technique: ClassVar[str] = "struct"
    calibrated: ClassVar[bool] = True
    keep: tuple[str, ...] = PRUNE_KEEP
    fraction: float = 0.25
    unit: str = "width"
    importance: str = "activation"
    heads: int = -1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.fraction, (int, float)) or not 0 < self.fraction < 1:
            raise InvalidInputError(
                f"structured pruning removes a fraction in (0, 1) of the parameters, got {self.fraction}"
            )
        if self.unit not in STRUCT_UNITS:
            raise InvalidInputError(
                f"structured pruning unit must be one of {', '.join(STRUCT_UNITS)}, got {self.unit!r}"
            )
        if self.importance not in IMPORTANCES:
            raise InvalidInputError(
                f"structured importance must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}"
            )
        if self.heads < -1 or (self.heads >= 0 and self.unit != "width"):
            raise InvalidInputError(
                f"heads applies to width pruning and counts query heads to remove per layer (≥ 0), got {self.heads}"
            )

    @property
    def name(self) -> str:
        heads = f"-h{self.heads}" if self.heads >= 0 else ""
        return (
            f"struct{_percent(self.fraction)}"
            + ("-layers" if self.unit == "layers" else "")
            + heads
            + ("-taylor" if self.importance == "taylor" else "")
        )


SHARE_INITS = ("mean", "first")


@dataclass(frozen=True)
class ShareConfig(CompressConfig):
    """ALBERT-style parameter sharing after training: consecutive groups of `group` decoder layers use
    one set of linear weights — the group's mean (`init="mean"`) or its first layer's. Norms stay per
    layer. Same compute as before: it saves memory and file size, not time."""

    technique: ClassVar[str] = "share"
    group: int = 2
    init: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group < 2:
            raise InvalidInputError(f"sharing needs groups of at least 2 layers, got {self.group}")
        if self.init not in SHARE_INITS:
            raise InvalidInputError(f"shared weights start from one of {', '.join(SHARE_INITS)}, got {self.init!r}")

    @property
    def name(self) -> str:
        return f"share{self.group}" + ("-first" if self.init == "first" else "")


CONFIGS: dict[str, type[CompressConfig]] = {
    c.technique: c
    for c in (
        Int8WeightConfig,
        W8A8Config,
        Int4WeightConfig,
        GPTQConfig,
        FP8Config,
        PruneConfig,
        StructuredConfig,
        ShareConfig,
    )
}

# Stable variant names → config. Group sizes and bits are read from the name.
NAME_PATTERNS: tuple[tuple[str, Any], ...] = (
    (r"int8", lambda m: Int8WeightConfig()),
    (r"w8a8", lambda m: W8A8Config()),
    (r"w8a8-smooth", lambda m: W8A8Config(smooth=True)),
    (r"int4-g(\d+)(-asym)?", lambda m: Int4WeightConfig(group_size=int(m[1]), symmetric=not m[2])),
    (r"gptq(\d)-g(\d+)(-asym)?", lambda m: GPTQConfig(bits=int(m[1]), group_size=int(m[2]), symmetric=not m[3])),
    (r"gptq8", lambda m: GPTQConfig(bits=8, group_size=0)),
    (r"fp8", lambda m: FP8Config()),
    (
        rf"({'|'.join(METHODS)})(\d+(?:\.\d+)?)(?:-({'|'.join(SCOPES)}))?",
        lambda m: PruneConfig(method=m[1], sparsity=float(m[2]) / 100, scope=m[3] or ""),
    ),
    (rf"({'|'.join(METHODS)})-(\d+):(\d+)", lambda m: PruneConfig(method=m[1], n=int(m[2]), m=int(m[3]))),
    (
        r"struct(\d+(?:\.\d+)?)(-layers)?(?:-h(\d+))?(-taylor)?",
        lambda m: StructuredConfig(
            fraction=float(m[1]) / 100,
            unit="layers" if m[2] else "width",
            heads=int(m[3]) if m[3] else -1,
            importance="taylor" if m[4] else "activation",
        ),
    ),
    (r"share(\d+)(-first)?", lambda m: ShareConfig(group=int(m[1]), init="first" if m[2] else "mean")),
)


NAMES_HELP = (
    "int8, w8a8, w8a8-smooth, int4-g<G>, gptq<bits>-g<G>, gptq8, fp8, <method><percent> (magnitude50, l2shrink50,"
    " taylor50, fisher50, wanda50, sparsegpt50), <method>-<N>:<M> (wanda-2:4),"
    " struct<percent>[-layers][-h<heads>][-taylor], share<K>[-first]"
)


def config_from_name(name: str, **overrides: Any) -> CompressConfig:
    """A variant name → its config: `int8`, `w8a8-smooth`, `int4-g128`, `gptq4-g128`, `fp8`, `wanda50`,
    `sparsegpt-2:4`, `struct25`, `share2`."""
    for pattern, make in NAME_PATTERNS:
        match = re.fullmatch(pattern, name)
        if match:
            config = make(match)
            return dataclasses.replace(config, **overrides) if overrides else config
    raise InvalidInputError(f"unknown compression {name!r}; use one of {NAMES_HELP}")


def config_from_dict(data: dict[str, Any]) -> CompressConfig:
    if data.get("schema") != SCHEMA:
        raise InvalidInputError(
            f"compression config schema {data.get('schema')!r} is not {SCHEMA!r}: written by another wattlm version"
        )
    cls = CONFIGS.get(data.get("technique", ""))
    if cls is None:
        raise InvalidInputError(f"unknown compression technique {data.get('technique')!r}; known: {', '.join(CONFIGS)}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names - {"schema", "technique"}
    if unknown:
        raise InvalidInputError(f"unknown field(s) {', '.join(sorted(unknown))} in a {cls.technique} config")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**values)
