"""`compress_(model, config)`: config type → handler, in place, recorded in the model's config.

A handler gets the `nn.Linear` layers to work on (after the `keep` filter) and returns the
replacements of those it swapped (quantized layers; pruning changes weights in place and returns
none) and what it did; this module does the rest once for all techniques: choosing targets, checking
the device can run the scheme, swapping modules, and recording what was done in
`model.config.wattlm_compression` — which `save` writes to config.json and `load` reads back.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError
from .config import (
    CompressConfig,
    FP8Config,
    GPTQConfig,
    Int4WeightConfig,
    Int8WeightConfig,
    PruneConfig,
    QuantConfig,
    ShareConfig,
    StructuredConfig,
    W8A8Config,
)
from .modules import set_module, targets

Handler = Callable[
    ..., tuple[dict[str, Any], dict[str, Any]]
]  # (targets, config, calibration, model) -> (modules, details)

# Config type → (module of wattlm.compress, handler function). An explicit table: the handler
# modules import nothing from here, and are imported only when their technique is used.
HANDLERS: dict[type, tuple[str, str]] = {
    Int8WeightConfig: ("quantize", "int8_handler"),
    W8A8Config: ("quantize", "w8a8_handler"),
    Int4WeightConfig: ("quantize", "int4_handler"),
    FP8Config: ("quantize", "fp8_handler"),
    GPTQConfig: ("gptq", "gptq_handler"),
    PruneConfig: ("prune", "prune_handler"),
    StructuredConfig: ("structured", "structured_handler"),
    ShareConfig: ("share", "share_handler"),
}

SCHEMES = {"int8": "int8", "w8a8": "w8a8", "int4": "int4", "gptq": "int4", "fp8": "fp8"}


def handler_of(config: CompressConfig) -> Handler:
    entry = HANDLERS.get(type(config))
    if entry is None:
        raise InvalidInputError(f"no handler for {type(config).__name__}")
    module, name = entry
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def scheme_of(config: QuantConfig) -> str:
    if getattr(config, "bits", None) == 8:  # gptq8 makes int8 layers
        return "int8"
    return SCHEMES[config.technique]


def check_device(config: CompressConfig, device: Any) -> Any:
    """The kernel plan for `config` on `device`; an error where the scheme cannot run at all."""
    from .kernels import plan, plan_dense

    if not isinstance(config, QuantConfig):
        return plan_dense(config, device)
    kernel_plan = plan(scheme_of(config), device, getattr(config, "group_size", 0))
    if config.technique == "fp8" and kernel_plan.kernel is None:
        raise InvalidInputError(
            f"fp8 cannot run on {getattr(device, 'type', device)}: {kernel_plan.note}; use int8 or w8a8 instead"
        )
    return kernel_plan


def compress_(model: Any, config: CompressConfig, calibration: Any = None) -> dict[str, Any]:
    """Compress `model` in place as `config` says; returns what was done (also kept in the config).

    Args:
        model: a Hugging Face causal LM (any module tree with `nn.Linear` layers works for the
            non-calibrated quantizations and magnitude pruning).
        config: e.g. `Int8WeightConfig()`, `GPTQConfig(bits=4, group_size=64)`,
            `PruneConfig(method="wanda", sparsity=0.5)`, `StructuredConfig(fraction=0.25)`.
        calibration: [samples, seq_len] token ids, needed by calibrated configs (GPTQ, SmoothQuant,
            Wanda, SparseGPT, Taylor, structured).
    """
    handler = handler_of(config)
    if config.calibrated and calibration is None:
        raise InvalidInputError(f"{config.name} is calibrated: it needs calibration token ids ([samples, seq_len])")
    device = next(model.parameters()).device
    kernel_plan = check_device(config, device)
    chosen = targets(model, config.keep)
    if not chosen:
        raise InvalidInputError(
            f"{config.name}: no plain nn.Linear layer left to work on (keep={list(config.keep)}); prune or share before"
            " quantizing (e.g. wanda50+int8)"
        )
    replacements, details = handler(chosen, config, calibration, model)
    modules = {}
    for name, module in replacements.items():
        set_module(model, name, module)
        modules[name] = {"scheme": module.scheme, "group_size": getattr(module, "group_size", 0)}
    record = {
        "config": config.to_dict(),
        "name": config.name,
        "kernel": kernel_plan.to_dict(),
        "details": details,
        "modules": modules,
    }
    history = list(getattr(model.config, "wattlm_compression", None) or [])
    model.config.wattlm_compression = history + [record]
    return record
