"""Round-to-nearest quantization grids and the handlers of the non-calibrated schemes.

Grids (w: [out, in] weights; G: group size):
    int8    q = round(w / s), s = max|w_row| / 127                         (symmetric, per row)
    int-b   symmetric:  q = round(w / s) ∈ [-2^(b-1), 2^(b-1)-1], s = max|w_group| / (2^(b-1)-1)
            asymmetric: q = round((w - min) / s) ∈ [0, 2^b-1], s = (max - min) / (2^b-1)
Low-bit codes are stored as 4-bit codes c = q + 8 (symmetric) or c = q (asymmetric) with a float
offset, so every grid shares one layer type: w ≈ (c - 8) · s + offset.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from .config import FP8Config, Int4WeightConfig, Int8WeightConfig, W8A8Config
from .qlinear import INT4_CENTER, FP8Linear, Int4Linear, Int8Linear, W8A8Linear


def grid(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and offset [rows] of the b-bit grid that covers each row of `w` [rows, cols]."""
    w = w.float()
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / qmax
        return scale, torch.zeros_like(scale)
    lo, hi = w.amin(dim=1), w.amax(dim=1)
    scale = (hi - lo).clamp(min=1e-12) / (2**bits - 1)
    return scale, lo + INT4_CENTER * scale  # offset such that (c - 8)·s + offset = c·s + lo


def to_codes(w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Codes [rows, cols] of `w` on the grid (scale, offset per row): w ≈ (code - 8) · scale + offset.
    int16, so 8-bit symmetric codes (-120…135) fit too; 4-bit layers store them as uint8 nibbles."""
    if symmetric:
        q = torch.round(w.float() / scale[:, None]).clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return (q + INT4_CENTER).to(torch.int16)
    lo = offset - INT4_CENTER * scale
    return torch.round((w.float() - lo[:, None]) / scale[:, None]).clamp(0, 2**bits - 1).to(torch.int16)


def from_codes(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return (codes.float() - INT4_CENTER) * scale[:, None] + offset[:, None]


def check_groups(name: str, linear: nn.Linear, group_size: int) -> None:
    k = linear.in_features
    if k % group_size:
        fits = [g for g in (8, 16, 32, 64, 128, 256) if k % g == 0]
        raise InvalidInputError(
            f"group size {group_size} does not divide the {k} inputs of {name}; use one that does"
            f" ({', '.join(map(str, fits)) or 'none'}) or keep that layer with keep=[{name!r}]"
        )


def rtn_groups(
    w: torch.Tensor, group_size: int, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest, group-wise: codes [N, K], scale and offset [N, K/G]."""
    n, k = w.shape
    groups = w.float().reshape(n * (k // group_size), group_size)
    scale, offset = grid(groups, bits, symmetric)
    codes = to_codes(groups, scale, offset, bits, symmetric).reshape(n, k)
    return codes, scale.reshape(n, -1), offset.reshape(n, -1)


def int8_handler(
    targets: dict[str, nn.Linear], config: Int8WeightConfig, calibration: Any, model: Any
) -> tuple[dict[str, nn.Module], dict]:
    return {name: Int8Linear.from_linear(linear) for name, linear in targets.items()}, {}


def w8a8_handler(
    targets: dict[str, nn.Linear], config: W8A8Config, calibration: Any, model: Any
) -> tuple[dict[str, nn.Module], dict]:
    details: dict[str, Any] = {}
    if config.smooth:
        from .smooth import smooth_

        details["alphas"] = smooth_(model, targets, config, calibration)
    return {name: W8A8Linear.from_linear(linear) for name, linear in targets.items()}, details


def int4_handler(
    targets: dict[str, nn.Linear], config: Int4WeightConfig, calibration: Any, model: Any
) -> tuple[dict[str, nn.Module], dict]:
    for name, linear in targets.items():
        check_groups(name, linear, config.group_size)
    out = {}
    for name, linear in targets.items():
        codes, scale, offset = rtn_groups(linear.weight.detach(), config.group_size, 4, config.symmetric)
        out[name] = Int4Linear.from_codes(codes, scale, offset, config.group_size, linear.bias)
    return out, {}


def fp8_handler(
    targets: dict[str, nn.Linear], config: FP8Config, calibration: Any, model: Any
) -> tuple[dict[str, nn.Module], dict]:
    return {name: FP8Linear.from_linear(linear) for name, linear in targets.items()}, {}
