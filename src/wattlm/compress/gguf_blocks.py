"""llama.cpp's 32-weight block formats Q4_0, Q4_1, IQ4_NL and Q8_0, in torch: choose a block's scale,
round weights onto its levels, give the values llama.cpp computes with, and pack the bytes it reads.

Every block covers 32 consecutive weights of a row (along the input dimension) and stores a float16
scale d (and, for Q4_1, a float16 minimum m). The values are, in float32:

    Q4_0    d · (q − 8)       q in 0..15
    Q4_1    d · q + m         q in 0..15
    IQ4_NL  d · K[q]          q in 0..15, K = llama.cpp's 16 non-linear levels (kvalues_iq4nl)
    Q8_0    d · q             q in −127..127 (stored as int8)

Scales are rounded to float16 before weights are rounded against them, so `values` is exactly what
the file de-quantizes to (checked against the gguf package's reader). `fit` picks each block's scale
from a small search around llama.cpp's own rule, minimising the squared rounding error weighted by
how much each input matters (the diagonal of the layer's input Hessian when calibrated, else 1).
The gguf package quantizes too, but only with the plain rules and without weights; GPTQ needs the
rounding of one column at a time against a scale fixed for the block, which these functions give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

BLOCK = 32
BLOCKS = "wattlm_gguf_blocks"  # the attribute of a module whose weight is on a block format (BlockTensor)
IQ4_NL_LEVELS = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
# Scale candidates around the rule's scale (1.0 always among them, so a block already on the grid is kept).
SEARCH = (0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 1.0, 1.025, 1.05)


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)


def _safe(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.ones_like(d), d)


@dataclass(frozen=True)
class BlockFormat:
    name: str  # q4_0 | q4_1 | iq4_nl | q8_0
    bytes_per_block: int

    @property
    def qtype(self) -> Any:
        import gguf

        return gguf.GGMLQuantizationType[self.name.upper()]

    # -- rounding and values; x, codes [N, j]; d, m [N] (one block of each row) ------------------------

    def codes(self, x: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        d, m = d[:, None], m[:, None]
        if self.name == "q4_0":
            q = torch.round(x / _safe(d)) + 8
            return torch.where(d == 0, 8.0, q).clamp(0, 15).to(torch.int16)
        if self.name == "q4_1":
            q = torch.round((x - m) / _safe(d))
            return torch.where(d == 0, 0.0, q).clamp(0, 15).to(torch.int16)
        if self.name == "q8_0":
            return torch.where(d == 0, 0.0, torch.round(x / _safe(d))).clamp(-127, 127).to(torch.int16)
        levels = torch.tensor(IQ4_NL_LEVELS, dtype=torch.float32, device=x.device)
        scaled = torch.where(d == 0, 0.0, x / _safe(d))
        return (scaled[..., None] - levels).abs().argmin(-1).to(torch.int16)  # nearest level

    def values(self, codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """What llama.cpp de-quantizes `codes` to: float32, one rounding per operation as ggml does."""
        d, m = d[:, None], m[:, None]
        if self.name == "q4_0":
            return d * (codes.to(torch.float32) - 8)
        if self.name == "q4_1":
            return d * codes.to(torch.float32) + m
        if self.name == "q8_0":
            return d * codes.to(torch.float32)
        levels = torch.tensor(IQ4_NL_LEVELS, dtype=torch.float32, device=codes.device)
        return d * levels[codes.long()]

    # -- the scale of a block --------------------------------------------------------------------------

    def rule(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """llama.cpp's reference scale (and minimum) of blocks w [N, 32], before float16 rounding."""
        zero = torch.zeros(w.shape[0], device=w.device)
        if self.name == "q4_1":
            low, high = w.min(1).values, w.max(1).values
            return (high - low) / 15, low
        if self.name == "q8_0":
            return w.abs().max(1).values / 127, zero
        # Q4_0 and IQ4_NL: the weight of largest magnitude goes to the lowest level (−8, or −127).
        signed = w.gather(1, w.abs().argmax(1, keepdim=True))[:, 0]
        return signed / (-8 if self.name == "q4_0" else -127), zero

    def fit(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float16-representable (d, m) per block of w [N, 32] that minimise Σ importance · (w − value)²
        over SEARCH × the rule's scale (Q4_1 shrinks its range about the middle)."""
        d0, m0 = self.rule(w)
        weight = torch.ones(w.shape[1], device=w.device) if importance is None else importance.to(w.device).float()
        best_err = torch.full((w.shape[0],), float("inf"), device=w.device)
        best_d, best_m = _fp16(d0), _fp16(m0)
        for s in SEARCH:
            d = _fp16(d0 * s)
            m = _fp16(m0 + (1 - s) * 15 * d0 / 2) if self.name == "q4_1" else m0
            err = ((w - self.values(self.codes(w, d, m), d, m)) ** 2 * weight).sum(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_d, best_m = torch.where(better, d, best_d), torch.where(better, m, best_m)
        return best_d, best_m


FORMATS = {
    "q4_0": BlockFormat("q4_0", 18),
    "q4_1": BlockFormat("q4_1", 20),
    "iq4_nl": BlockFormat("iq4_nl", 18),
    "q8_0": BlockFormat("q8_0", 34),
}


@dataclass(frozen=True)
class BlockTensor:
    """A weight [N, K] on a block format: codes [N, K], scales d and minimums m [N, K/32] (m is zero but
    for Q4_1). Attached to a module as `wattlm_gguf_blocks`, it is written to the GGUF as it is."""

    fmt: BlockFormat
    codes: torch.Tensor
    d: torch.Tensor
    m: torch.Tensor

    def values(self) -> torch.Tensor:
        n, k = self.codes.shape
        blocks = self.codes.reshape(n * (k // BLOCK), BLOCK)
        out = self.fmt.values(blocks, self.d.reshape(-1), self.m.reshape(-1))
        return out.reshape(n, k)

    def packed(self) -> Any:
        """The tensor's bytes as llama.cpp reads them: uint8 [N, K/32 · bytes_per_block]."""
        import numpy as np

        n, k = self.codes.shape
        nb = k // BLOCK
        d = self.d.reshape(n * nb, 1).numpy().astype(np.float16).view(np.uint8)  # [blocks, 2]
        codes = self.codes.reshape(n * nb, BLOCK).numpy()
        if self.fmt.name == "q8_0":
            body = codes.astype(np.int8).view(np.uint8)
        else:  # two 4-bit codes per byte: weight j in the low nibble, weight j + 16 in the high one
            q = codes.astype(np.uint8)
            body = q[:, : BLOCK // 2] | (q[:, BLOCK // 2 :] << np.uint8(4))
        parts = [d]
        if self.fmt.name == "q4_1":
            parts.append(self.m.reshape(n * nb, 1).numpy().astype(np.float16).view(np.uint8))
        out = np.concatenate([*parts, body], axis=1)
        return out.reshape(n, nb * self.fmt.bytes_per_block)


def check_width(name: str, k: int) -> None:
    from ..errors import InvalidInputError

    if k % BLOCK:
        raise InvalidInputError(
            f"{name} has {k} inputs, not a multiple of {BLOCK}: llama.cpp's block formats cannot hold it"
        )


def round_to_nearest(w: torch.Tensor, fmt: BlockFormat) -> BlockTensor:
    """w [N, K] rounded block by block onto `fmt` without calibration (as for the token embeddings)."""
    n, k = w.shape
    blocks = w.detach().float().reshape(n * (k // BLOCK), BLOCK)
    d, m = fmt.fit(blocks)
    codes = fmt.codes(blocks, d, m)
    return BlockTensor(fmt, codes.reshape(n, k), d.reshape(n, k // BLOCK), m.reshape(n, k // BLOCK))
