"""Bench steps for precision (`fp32`, `bf16`, `fp16`) and `compile` (torch.compile, always last)."""

from __future__ import annotations

from typing import Any

from .step import Context, Step


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


# Step names (regular expressions matched whole) → the Step they make.
STEPS = [
    (r"fp32|bf16|fp16", lambda match: _precision(match[0])),
    (r"compile", lambda match: _compile()),
]
