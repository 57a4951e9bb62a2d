"""GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", 2022), group-wise, on CPU or GPU, written here because the maintained GPTQ packages
need CUDA kernels to install or run.

For one linear layer with inputs X (calibration tokens) and H = XᵀX / tokens, columns are quantized
left to right; the rounding error of column i, e = (w_i - q_i) / [H⁻¹]_ii (with H⁻¹ in its upper
Cholesky form), is subtracted from the remaining columns as e · [H⁻¹]_{i, i+1:}. That update keeps
XWᵀ close to XQᵀ where plain rounding does not. Layers are done in order: decoder layer l is
calibrated on the outputs of the already-quantized layers 0..l-1; layers outside the decoder stack
(lm_head) last, on the quantized model's final hidden states.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from .capture import layerwise
from .config import GPTQConfig
from .qlinear import INT4_CENTER, Int4Linear, Int8Linear
from .quantize import check_groups, from_codes, grid, to_codes

BATCH = 8  # calibration sequences per forward pass


class IntGrid:
    """The b-bit integer grid of wattlm's own int4/int8 layers (quantize.grid), in the form GPTQ rounds on:
    `fit` a group's parameters, `codes` of a column against them, the `values` those codes stand for."""

    def __init__(self, bits: int, symmetric: bool) -> None:
        self.bits, self.symmetric = bits, symmetric

    def fit(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return grid(w, self.bits, self.symmetric)

    def codes(self, x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return to_codes(x, scale, offset, self.bits, self.symmetric)

    def values(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return from_codes(codes, scale, offset)


def gptq_quantize(
    w: torch.Tensor,
    h: torch.Tensor,
    *,
    bits: int = 4,
    group_size: int,
    symmetric: bool = True,
    damp: float = 0.01,
    block_size: int = 128,
    on: Any = None,
    act_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ of one weight matrix w [N, K] given the input Hessian h [K, K].

    Returns codes [N, K] and the two per-group parameters [N, K/G] of the grid `on` (default
    IntGrid(bits, symmetric): scale and offset, see quantize.grid; engines.gguf_blocks formats: the
    float16 scale and minimum of llama.cpp's blocks). A group's parameters are fitted when GPTQ reaches
    its first column, to its weights as updated so far, weighting each input by diag(H).
    group_size 0 means one group per row, its grid fixed from the whole row before any update.

    act_order: columns are quantized in order of decreasing diag(H) (the inputs that matter most
    first, while the most columns remain to absorb their error), and every group's grid is fitted
    before the pass, from the weights as they are ("static groups"): a group's columns are then no
    longer neighbours in the pass, so its grid cannot wait for them.
    """
    on = on if on is not None else IntGrid(bits, symmetric)
    if act_order and group_size:
        return _act_order(w, h, on, group_size, damp, block_size)
    w, hinv = weights_and_inverse(w, h, damp)
    importance = torch.diag(h).float().to(w.device)
    n, k = w.shape

    per_row = group_size == 0
    if per_row:
        group_size = k
        params = on.fit(w, importance)
    codes = torch.zeros(n, k, dtype=torch.int16, device=w.device)
    first = torch.zeros(n, k // group_size, device=w.device)
    second = torch.zeros_like(first)
    # Groups never straddle blocks (a group's grid is taken from its weights as updated so far).
    block = block_size if per_row else max(group_size, block_size // group_size * group_size)
    for start in range(0, k, block):
        end = min(start + block, k)
        w1, hinv1 = w[:, start:end].clone(), hinv[start:end, start:end]
        err1 = torch.zeros_like(w1)
        for i in range(end - start):
            col = start + i
            if col % group_size == 0 and not per_row:  # the group's grid, from its weights as updated so far
                params = on.fit(w1[:, i : i + group_size], importance[col : col + group_size])
                first[:, col // group_size], second[:, col // group_size] = params
            q = on.codes(w1[:, i : i + 1], *params)
            codes[:, col] = q[:, 0]
            e = (w1[:, i] - on.values(q, *params)[:, 0]) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, end:] -= err1 @ hinv[start:end, end:]
    if per_row:
        first[:, 0], second[:, 0] = params
    return codes, first, second


def _act_order(
    w: torch.Tensor, h: torch.Tensor, on: Any, group_size: int, damp: float, block_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, k = w.shape
    importance = torch.diag(h).float().to(w.device)
    groups = k // group_size
    wf = w.detach().float()
    fitted = [on.fit(wf[:, g * group_size : (g + 1) * group_size], importance[g * group_size : (g + 1) * group_size])
              for g in range(groups)]  # fmt: skip
    first = torch.stack([f for f, _ in fitted], 1)
    second = torch.stack([s for _, s in fitted], 1)
    perm = torch.argsort(torch.diag(h), descending=True)
    w, hinv = weights_and_inverse(wf[:, perm], h[perm][:, perm], damp)
    group_of = (perm // group_size).tolist()
    codes = torch.zeros(n, k, dtype=torch.int16, device=w.device)
    for start in range(0, k, block_size):
        end = min(start + block_size, k)
        w1, hinv1 = w[:, start:end].clone(), hinv[start:end, start:end]
        err1 = torch.zeros_like(w1)
        for i in range(end - start):
            g = group_of[start + i]
            params = (first[:, g], second[:, g])
            q = on.codes(w1[:, i : i + 1], *params)
            codes[:, perm[start + i]] = q[:, 0]
            e = (w1[:, i] - on.values(q, *params)[:, 0]) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, end:] -= err1 @ hinv[start:end, end:]
    return codes, first, second


def weights_and_inverse(w: torch.Tensor, h: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 working copy of w [N, K] and the upper Cholesky factor of (H + λI)⁻¹ [K, K], the start of
    GPTQ and SparseGPT alike. Inputs never active in calibration get a unit diagonal and zero weights:
    their weights cannot matter there."""
    w = w.detach().float().clone()
    h = h.detach().double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    return w, inverse_cholesky(h, damp).float()


def inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = damp · mean(diag H), raising λ if H is too ill-conditioned."""
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    mean_diag = torch.diag(h).mean()
    for attempt in range(5):
        try:
            lower = torch.linalg.cholesky(h + damp * 10**attempt * mean_diag * eye)
            return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)
        except torch.linalg.LinAlgError:
            continue
    raise InvalidInputError(
        "a layer's calibration Hessian is not positive definite even with 10,000× damping; use more calibration samples"
    )


class Hessians:
    """Running H = Σ xᵀx / tokens per layer name.

    Each batch's product is taken in float32 (float64 matmuls are ~4× slower on CPU) and summed in
    float64. Layers fed the same tensor (q/k/v_proj, gate/up_proj) share one product per batch.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, int] = {}
        # (input, its key, its product). Holding the input keeps its memory from being reused by the
        # next batch's input, whose address, shape and version could otherwise all match.
        self._last: tuple[torch.Tensor, Any, torch.Tensor] | None = None

    def __call__(self, name: str, x: torch.Tensor) -> None:
        key = (x.data_ptr(), tuple(x.shape), x._version)
        if self._last is None or self._last[1] != key:
            xf = x.float()
            self._last = (x, key, (xf.t() @ xf).double())
        self.sums[name] = self.sums.get(name, 0) + self._last[2]
        self.tokens[name] = self.tokens.get(name, 0) + x.shape[0]

    def pop(self, name: str) -> torch.Tensor:
        self._last = None
        return self.sums.pop(name) / self.tokens.pop(name)


def _layer(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, config: GPTQConfig, bias: Any) -> nn.Module:
    if config.bits == 8:  # symmetric per row: codes - 8 are the int8 values
        return Int8Linear.from_int((codes - INT4_CENTER).to(torch.int8), scale[:, 0], bias)
    return Int4Linear.from_codes(codes, scale, offset, config.group_size, bias)


def _quantize_layers(
    linears: dict[str, nn.Linear], hessians: Hessians, config: GPTQConfig, model: Any
) -> dict[str, nn.Module]:
    from .modules import set_module

    done = {}
    for name, linear in linears.items():
        codes, scale, offset = gptq_quantize(
            linear.weight,
            hessians.pop(name),
            bits=config.bits,
            group_size=config.group_size,
            symmetric=config.symmetric,
            damp=config.damp,
            block_size=config.block_size,
        )
        done[name] = _layer(codes, scale, offset, config, linear.bias)
        # Swap at once: the next layers are calibrated on this layer's quantized outputs.
        set_module(model, name, done[name])
    return done


@torch.no_grad()
def gptq_handler(
    targets: dict[str, nn.Linear], config: GPTQConfig, calibration: Any, model: Any
) -> tuple[dict[str, nn.Module], dict]:
    if config.group_size:
        for name, linear in targets.items():
            check_groups(name, linear, config.group_size)
    quantized: dict[str, nn.Module] = {}
    layerwise(
        model,
        targets,
        calibration,
        Hessians,
        lambda own, hessians: quantized.update(_quantize_layers(own, hessians, config, model)),
        BATCH,
    )
    return quantized, {"calibration_tokens": int(calibration.numel())}
