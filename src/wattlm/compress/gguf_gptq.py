"""GPTQ onto llama.cpp's block formats, for `gguf-gptq-<type>` exports.

Every linear layer of the decoder is calibrated with GPTQ (compress.gptq, in order, each layer on
the outputs of the already-quantized ones) onto exactly the grid of one GGUF block type: blocks of 32
inputs, a float16 scale (and minimum for Q4_1) per block. Columns go in order of decreasing Hessian
diagonal ("act order"), so every block's scale is fitted to its weights before the pass; on the
default model that took perplexity from +10.2 % to +5.3 % over fp32 for Q4_0 (32 calibration
windows, torch's arithmetic). The token embeddings — and the output layer, tied to them or not —
are rounded to nearest on Q8_0, as llama.cpp's own quantizer keeps that tensor at higher precision
on these models. The layers keep computing in float32 with the de-quantized values, so the model in
memory is the file's model, and each carries its blocks (`wattlm_gguf_blocks`) for the GGUF writer to store as they are.

Mixed types under a size budget (`size_budget_bytes`): the layers the model is most sensitive to go
to Q8_0 while the weights fit. Sensitivity is measured, not assumed: for each linear layer alone,
the KL divergence of the next-token distributions when just that layer is rounded onto the 4-bit
type, on a few calibration windows. The token embeddings count first (they stay Q8_0 while the
budget allows, as without a budget); then layers in order of KL per extra byte.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .capture import decoder_layers, layerwise
from .gguf_blocks import BLOCK, BLOCKS, FORMATS, BlockTensor, check_width, round_to_nearest
from .gptq import BATCH, Hessians, gptq_quantize

EMBEDDING_TYPE = "q8_0"
HIGH = "q8_0"  # the type sensitive layers are kept at under a size budget
SENSITIVITY_WINDOWS, SENSITIVITY_TOKENS = 2, 128  # calibration text the per-layer KL is measured on


def weight_bytes(shape: tuple[int, int], quant: str) -> int:
    return shape[0] * shape[1] // BLOCK * FORMATS[quant].bytes_per_block


@torch.no_grad()
def sensitivities(model: Any, targets: dict[str, nn.Linear], quant: str, ids: torch.Tensor) -> dict[str, float]:
    """KL(model ‖ model with only that layer rounded onto `quant`), nats per token, for every target."""
    ids = ids[:SENSITIVITY_WINDOWS, :SENSITIVITY_TOKENS]
    reference = torch.log_softmax(model(ids).logits.double(), -1)
    out = {}
    for name, linear in targets.items():
        saved = linear.weight.detach().clone()
        linear.weight.copy_(round_to_nearest(saved, FORMATS[quant]).values())
        got = torch.log_softmax(model(ids).logits.double(), -1)
        out[name] = float((reference.exp() * (reference - got)).sum(-1).mean())
        linear.weight.copy_(saved)
    return out


def plan_types(
    shapes: dict[str, tuple[int, int]],
    sensitivity: dict[str, float],
    quant: str,
    budget_bytes: int,
    embedding: str,
) -> dict[str, str]:
    """The type of each weight (`embedding` is the token embeddings' name in `shapes`): all on `quant`,
    then the embeddings and the most sensitive layers per extra byte raised to HIGH while the total
    stays within `budget_bytes`. Raises if even all on `quant` does not fit."""
    from ..errors import ConfigError

    types = {name: quant for name in shapes}
    total = sum(weight_bytes(shape, quant) for shape in shapes.values())
    if total > budget_bytes:
        raise ConfigError(
            f"{{size_budget}} {budget_bytes / 2**20:,.1f} MiB is below the smallest {quant.upper()} file's weights"
            f" ({total / 2**20:,.1f} MiB); give at least that",
            field="size_budget",
        )

    def extra(name: str) -> int:
        return weight_bytes(shapes[name], HIGH) - weight_bytes(shapes[name], quant)

    order = [embedding] + sorted(
        (n for n in shapes if n != embedding), key=lambda n: sensitivity[n] / max(extra(n), 1), reverse=True
    )
    for name in order:
        if total + extra(name) <= budget_bytes:
            types[name] = HIGH
            total += extra(name)
    return types


def _attach(module: nn.Module, blocks: BlockTensor) -> None:
    with torch.no_grad():
        module.weight.copy_(blocks.values().to(module.weight.device, module.weight.dtype))
    setattr(module, BLOCKS, blocks)


@torch.no_grad()
def gptq_to_blocks_(
    model: Any,
    quant: str,
    calibration: torch.Tensor,
    *,
    damp: float = 0.01,
    size_budget_bytes: int | None = None,
) -> dict[str, Any]:
    """Put every weight of `model` (a Llama-family causal LM, float32) on GGUF block format `quant`
    (one of FORMATS), calibrated on `calibration` ids [n, seq_len]; changes the model in place. With
    `size_budget_bytes`, the most sensitive weights go to Q8_0 within that many bytes of weights."""
    layers = decoder_layers(model)
    in_layers = {id(m) for layer in layers for m in layer.modules()}
    targets = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and id(module) in in_layers
    }
    for name, linear in targets.items():
        check_width(name, linear.in_features)
    embedding = model.get_input_embeddings()
    check_width("the token embeddings", embedding.weight.shape[1])
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == embedding.weight.data_ptr()
    types = {name: quant for name in targets} | {"token_embd": EMBEDDING_TYPE}
    sensitivity: dict[str, float] = {}
    if size_budget_bytes is not None:
        shapes = {name: tuple(m.weight.shape) for name, m in targets.items()}
        shapes["token_embd"] = tuple(embedding.weight.shape)
        if head is not None and not tied:
            shapes["output"] = tuple(head.weight.shape)
        sensitivity = sensitivities(model, targets, quant, calibration)
        sensitivity["output"] = sensitivity["token_embd"] = float("inf")  # first, as without a budget
        types = plan_types(shapes, sensitivity, quant, size_budget_bytes, "token_embd")  # type: ignore[arg-type]

    def process(own: dict[str, nn.Linear], hessians: Hessians) -> None:
        for name, linear in own.items():
            fmt = FORMATS[types[name]]
            codes, d, m = gptq_quantize(
                linear.weight, hessians.pop(name), group_size=BLOCK, on=fmt, damp=damp, act_order=True
            )
            _attach(linear, BlockTensor(fmt, codes.cpu(), d.cpu(), m.cpu()))

    layerwise(model, targets, calibration, Hessians, process, BATCH)
    _attach(embedding, round_to_nearest(embedding.weight, FORMATS[types["token_embd"]]))
    if head is not None and not tied:
        _attach(head, round_to_nearest(head.weight, FORMATS[types.get("output", EMBEDDING_TYPE)]))
    high = sorted(n for n, t in types.items() if t == HIGH and n in targets)
    return {
        "type": quant,
        "method": (
            f"GPTQ on llama.cpp's {quant.upper()} blocks (32 inputs, float16 scale), columns in order of decreasing"
            f" Hessian diagonal with every block's scale fitted first, damp {damp:g}"
        ),
        "layers": len(targets),
        "embedding": f"{types['token_embd']} (round to nearest, scale searched)"
        + (", tied to the output" if tied else ""),
        "calibration_tokens": int(calibration.numel()),
        "size_budget_bytes": size_budget_bytes,
        "layers_at_q8_0": high if quant != HIGH else "all",
        "sensitivity_kl": {n: sensitivity[n] for n in high} if sensitivity else None,
    }
