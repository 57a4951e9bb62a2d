"""GPTQ onto llama.cpp's block formats, for `gguf-gptq-<type>` exports.

Every linear layer of the decoder is calibrated with GPTQ (compress.gptq, in order, each layer on
the outputs of the already-quantized ones) onto exactly the grid of one GGUF block type: blocks of 32
inputs, a float16 scale (and minimum for Q4_1) fitted per block to the weights as GPTQ has updated
them. The token embeddings — and the output layer, tied to them or not — are rounded to nearest on
Q8_0, as llama.cpp's own quantizer keeps that tensor at higher precision on these models. The layers
keep computing in float32 with the de-quantized values, so the model in memory is the file's model,
and each carries its blocks (`wattlm_gguf_blocks`) for the GGUF writer to store as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .capture import decoder_layers, layerwise
from .gguf_blocks import BLOCK, BLOCKS, FORMATS, BlockTensor, check_width, round_to_nearest
from .gptq import BATCH, Hessians, gptq_quantize

TYPES = ("q4_0", "q4_1", "iq4_nl", "q8_0")
EMBEDDING_TYPE = "q8_0"


def _attach(module: nn.Module, blocks: BlockTensor) -> None:
    with torch.no_grad():
        module.weight.copy_(blocks.values().to(module.weight.device, module.weight.dtype))
    setattr(module, BLOCKS, blocks)


@torch.no_grad()
def gptq_to_blocks_(model: Any, quant: str, calibration: torch.Tensor, *, damp: float = 0.01) -> dict[str, Any]:
    """Put every weight of `model` (a Llama-family causal LM, float32) on GGUF block format `quant`
    (one of TYPES), calibrated on `calibration` ids [n, seq_len]; changes the model in place."""
    fmt = FORMATS[quant]
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

    def process(own: dict[str, nn.Linear], hessians: Hessians) -> None:
        for name, linear in own.items():
            codes, d, m = gptq_quantize(linear.weight, hessians.pop(name), group_size=BLOCK, on=fmt, damp=damp)
            _attach(linear, BlockTensor(fmt, codes.cpu(), d.cpu(), m.cpu()))

    layerwise(model, targets, calibration, Hessians, process, BATCH)
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == embedding.weight.data_ptr()
    _attach(embedding, round_to_nearest(embedding.weight, FORMATS[EMBEDDING_TYPE]))
    if head is not None and not tied:
        _attach(head, round_to_nearest(head.weight, FORMATS[EMBEDDING_TYPE]))
    return {
        "type": quant,
        "method": f"GPTQ on llama.cpp's {quant.upper()} blocks (32 inputs, float16 scale), damp {damp:g}",
        "layers": len(targets),
        "embedding": f"{EMBEDDING_TYPE} (round to nearest, scale searched){', tied to the output' if tied else ''}",
        "calibration_tokens": int(calibration.numel()),
    }
