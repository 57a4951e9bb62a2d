"""`compress_(model, config)`: config type → handler, in place, recorded in the model's config.

A handler gets the `nn.Linear` layers to work on (after the `keep` filter) and returns the
replacements of those it swapped (quantized layers; pruning changes weights in place and returns
none) and what it did; this module does the rest once for all techniques: choosing targets, checking
the device can run the scheme, swapping modules, and recording what was done in
`model.config.wattlm_compression` — which `save` writes to config.json and `load` reads back.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError
from .config import CompressConfig, QuantConfig

Handler = Callable[..., tuple[dict[str, Any], dict[str, Any]]]  # (targets, config, calibration, model) -> (modules, details)
_HANDLERS: dict[type, Handler] = {}

SCHEMES = {"int8": "int8", "w8a8": "w8a8", "int4": "int4", "gptq": "int4", "fp8": "fp8"}


def register_handler(config_type: type) -> Callable[[Handler], Handler]:
    def wrap(fn: Handler) -> Handler:
        _HANDLERS[config_type] = fn
        return fn

    return wrap


def _load_handlers() -> None:
    from . import gptq, prune, quantize, share, sparsegpt, structured  # noqa: F401  (their import registers the handlers)


def scheme_of(config: QuantConfig) -> str:
    if getattr(config, "bits", None) == 8:  # gptq8 makes int8 layers
        return "int8"
    return SCHEMES[config.technique]


def targets(model: Any, keep: tuple[str, ...]) -> dict[str, Any]:
    """Every plain `nn.Linear` whose qualified name matches no `keep` pattern."""
    from torch import nn

    return {
        name: module
        for name, module in model.named_modules()
        if type(module) is nn.Linear and not any(fnmatch.fnmatchcase(name, pattern) for pattern in keep)
    }


def set_module(model: Any, name: str, module: Any) -> None:
    """Put `module` at `name` and at every other name of the module there (layers that share it)."""
    old = model.get_submodule(name)
    names = [n for n, m in model.named_modules(remove_duplicate=False) if m is old] or [name]
    for alias in names:
        parent_name, _, child = alias.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def check_device(config: CompressConfig, device: Any) -> Any:
    """The kernel plan for `config` on `device`; an error where the scheme cannot run at all."""
    from .kernels import plan, plan_dense

    if not isinstance(config, QuantConfig):
        return plan_dense(config, device)
    kernel_plan = plan(scheme_of(config), device, getattr(config, "group_size", 0))
    if config.technique == "fp8" and kernel_plan.kernel is None:
        raise InvalidInputError(f"fp8 cannot run on {getattr(device, 'type', device)}: {kernel_plan.note}; use int8 or w8a8 instead")
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
    _load_handlers()
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise InvalidInputError(f"no handler for {type(config).__name__}")
    if config.calibrated and calibration is None:
        raise InvalidInputError(f"{config.name} is calibrated: it needs calibration token ids ([samples, seq_len])")
    device = next(model.parameters()).device
    kernel_plan = check_device(config, device)
    chosen = targets(model, config.keep)
    if not chosen:
        raise InvalidInputError(
            f"{config.name}: no plain nn.Linear layer left to work on (keep={list(config.keep)}); prune or share before quantizing (e.g. wanda50+int8)"
        )
    replacements, details = handler(chosen, config, calibration, model)
    modules = {}
    for name, module in replacements.items():
        set_module(model, name, module)
        modules[name] = {"scheme": module.scheme, "group_size": getattr(module, "group_size", 0)}
    record = {"config": config.to_dict(), "name": config.name, "kernel": kernel_plan.to_dict(), "details": details, "modules": modules}
    history = list(getattr(model.config, "wattlm_compression", None) or [])
    model.config.wattlm_compression = history + [record]
    return record
