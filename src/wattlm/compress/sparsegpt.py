"""SparseGPT (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot", 2023), on CPU or GPU, written here because the reference code is a research script
tied to its own model loaders.

For one linear layer with inputs X and H = XᵀX / tokens (damped), columns are visited left to right
as in GPTQ (gptq.py), but "rounding" a weight means either keeping it or setting it to zero: the
error e = (w_i − q_i) / [H⁻¹]_ii of column i is spread over the columns not yet visited,
w_{i+1:} −= e · [H⁻¹]_{i, i+1:}, so the kept weights absorb what the zeroed ones did. The mask is
chosen per block of columns from the weights as updated so far, dropping the lowest
w² / [H⁻¹]_ii² (the OBS saliency): exactly round(sparsity · rows · block) per block, or for N:M the
M − N lowest of every M consecutive inputs in each row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import PruneConfig
from .gptq import Hessians, weights_and_inverse

BATCH = 8  # calibration sequences per forward pass


def sparsegpt_prune(w: torch.Tensor, h: torch.Tensor, config: PruneConfig) -> torch.Tensor:
    """The pruned and updated weight [N, K] (float32, zeros where pruned) of w [N, K] given H [K, K]."""
    from .prune import drop_lowest

    w, hinv = weights_and_inverse(w, h, config.damp)
    rows, cols = w.shape
    block = max(config.m, config.block_size // config.m * config.m) if config.m else config.block_size
    for start in range(0, cols, block):
        end = min(start + block, cols)
        w1, hinv1 = w[:, start:end].clone(), hinv[start:end, start:end]
        d = torch.diag(hinv1)
        err1 = torch.zeros_like(w1)
        pruned = torch.zeros_like(w1, dtype=torch.bool)
        if not config.m:
            pruned = drop_lowest(w1.square() / d[None, :].square(), round(config.sparsity * w1.numel()))
        for i in range(end - start):
            if config.m and i % config.m == 0:
                saliency = w1[:, i : i + config.m].square() / d[None, i : i + config.m].square()
                order = saliency.argsort(dim=1, stable=True)[:, : config.m - config.n]
                pruned[:, i : i + config.m].scatter_(1, order, True)
            q = torch.where(pruned[:, i], 0.0, w1[:, i])
            e = (w1[:, i] - q) / d[i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w1[pruned] = 0.0  # exactly zero, not a rounding residue of the update
        w[:, start:end] = w1
        w[:, end:] -= err1 @ hinv[start:end, end:]
    return w


@torch.no_grad()
def prune_layers(targets: dict[str, nn.Linear], config: PruneConfig, calibration: Any, model: Any) -> None:
    """SparseGPT on every target, layer by layer (see capture.layerwise)."""
    from .capture import layerwise

    def process(own: dict[str, nn.Linear], hessians: Hessians) -> None:
        for name, linear in own.items():
            linear.weight.data.copy_(sparsegpt_prune(linear.weight, hessians.pop(name), config).to(linear.weight.dtype))

    layerwise(model, targets, calibration, Hessians, process, BATCH)
