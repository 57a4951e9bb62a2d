"""Quantization-aware training: train through the rounding the quantized model will do.

Each linear layer's weight gets a parametrization that rounds it to the int8 (per output row) or
int4 (per group of G inputs) grid of `wattlm.compress` in the forward pass, and passes the gradient
straight through (w + (q(w) − w).detach(): d/dw = 1). The fp32 weights keep learning; `convert_`
then quantizes them with the very same grid, so the converted model computes what training saw.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..compress.config import Int4WeightConfig, Int8WeightConfig, QuantConfig
from ..compress.qlinear import int8_rows
from ..compress.quantize import check_groups, from_codes, rtn_groups
from ..compress.registry import targets


def qat_config(name: str) -> QuantConfig:
    """int8 → Int8WeightConfig; int4-g<G> → Int4WeightConfig(group_size=G) (symmetric, as int4-g<G> in bench)."""
    match = re.fullmatch(r"int4-g(\d+)", name)
    return Int4WeightConfig(group_size=int(match[1])) if match else Int8WeightConfig()


def fake_quantize(w: torch.Tensor, config: QuantConfig) -> torch.Tensor:
    """`w` rounded to the grid `config` quantizes to, in w's dtype (no gradient path)."""
    if isinstance(config, Int4WeightConfig):
        n, k = w.shape
        codes, scale, offset = rtn_groups(w, config.group_size, 4, config.symmetric)
        groups = from_codes(codes.reshape(-1, config.group_size), scale.reshape(-1), offset.reshape(-1))
        return groups.reshape(n, k).to(w.dtype)
    q, scale = int8_rows(w)
    return (q.float() * scale[:, None]).to(w.dtype)


class FakeQuant(nn.Module):
    """Parametrization: forward value q(w), gradient of the identity (straight-through estimator)."""

    def __init__(self, config: QuantConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (fake_quantize(w.detach(), self.config) - w).detach()


def enable_qat_(model: Any, name: str) -> dict[str, Any]:
    """Put fake quantization on every linear layer `compress_` would quantize (lm_head kept)."""
    from torch.nn.utils import parametrize

    config = qat_config(name)
    chosen = targets(model, config.keep)
    if isinstance(config, Int4WeightConfig):
        for module_name, linear in chosen.items():
            check_groups(module_name, linear, config.group_size)
    for linear in chosen.values():
        parametrize.register_parametrization(linear, "weight", FakeQuant(config))
    return {"scheme": config.name, "layers": len(chosen)}


def convert_(model: Any, name: str) -> dict[str, Any]:
    """Drop the fake quantization (keeping the trained fp32 weights) and quantize for real."""
    from torch.nn.utils import parametrize

    from ..compress.registry import compress_

    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    return compress_(model, qat_config(name))
