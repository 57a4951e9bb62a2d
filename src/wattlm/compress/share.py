"""Parameter sharing across decoder layers (ALBERT-style, Lan et al. 2019), applied to a trained model.

Consecutive groups of K layers use one set of linear layers: the later layers of a group hold the
*same* `nn.Linear` modules as its first (so a later quantization replaces each shared module once
and every layer sees the replacement), initialised to the group's mean weights or its first layer's.
Norms and everything that is not a plain linear layer stay per layer. Without retraining this costs
quality — the benchmark says how much; the compute per token is unchanged.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from .capture import decoder_layers
from .config import ShareConfig


def groups_of(count: int, size: int) -> list[list[int]]:
    """[[0, 1], [2, 3], ...]: consecutive layer indices; the last group may be smaller."""
    return [list(range(start, min(start + size, count))) for start in range(0, count, size)]


def tie_(model: Any, groups: list[list[int]], names: list[str]) -> None:
    """Make the layers of each group hold their group's first layer's modules at `names`
    (paths inside a decoder layer, e.g. `mlp.up_proj`). Used by `compress_` and by `load`."""
    from .modules import set_module

    layers = decoder_layers(model)
    prefix = {id(layer): name for name, layer in model.named_modules() if any(layer is l for l in layers)}
    for group in groups:
        first = layers[group[0]]
        for index in group[1:]:
            for name in names:
                set_module(model, f"{prefix[id(layers[index])]}.{name}", first.get_submodule(name))


@torch.no_grad()
def share_handler(
    targets: dict[str, nn.Linear], config: ShareConfig, calibration: Any, model: Any
) -> tuple[dict, dict]:
    layers = decoder_layers(model)
    if config.group > len(layers):
        raise InvalidInputError(
            f"{config.name}: the model has {len(layers)} decoder layers, fewer than a group of {config.group}"
        )
    layer_names = {id(layer): name for name, layer in model.named_modules() if any(layer is l for l in layers)}
    # Linear layers inside a decoder layer that no keep pattern excludes, by their path in the layer.
    names = sorted(
        name
        for name, module in layers[0].named_modules()
        if type(module) is nn.Linear
        and not any(fnmatch.fnmatchcase(f"{layer_names[id(layers[0])]}.{name}", k) for k in config.keep)
    )
    if not names:
        raise InvalidInputError(
            f"{config.name}: no plain nn.Linear in the decoder layers to share; share before quantizing"
        )
    groups = groups_of(len(layers), config.group)
    for group in groups:
        first = layers[group[0]]
        for name in names:
            shapes = {tuple(layers[i].get_submodule(name).weight.shape) for i in group}
            if len(shapes) > 1:
                raise InvalidInputError(
                    f"{config.name}: {name} has different shapes across layers {group}; it cannot be shared"
                )
            if config.init == "mean":
                target = first.get_submodule(name)
                for attr in ("weight", "bias"):
                    if getattr(target, attr, None) is not None:
                        stacked = torch.stack(
                            [getattr(layers[i].get_submodule(name), attr).detach().float() for i in group]
                        )
                        getattr(target, attr).data.copy_(stacked.mean(dim=0).to(getattr(target, attr).dtype))
    tie_(model, groups, names)
    return {}, {"groups": groups, "shared": names, "init": config.init}
