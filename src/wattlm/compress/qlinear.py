"""Quantized replacements for `nn.Linear`: the stored form (what safetensors keeps) and the forward.

Stored tensors are device-neutral (plain int8 / packed nibbles / fp8 plus float32 scales); a
kernel-specific layout (torch's int4 packing) is built on first use and kept out of the state dict,
so a saved model reloads bit-identically on any machine. Shapes: weight [out, in], x [..., in].
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import SMALL_BATCH_ROWS, plan

INT4_CENTER = 8  # codes 0..15 stand for (code - 8) · scale + offset


class QuantLinear(nn.Module):
    """Common part: sizes, bias, and the kernel plan chosen for the device the layer runs on."""

    scheme = ""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    def _filled(self, bias: torch.Tensor | None, device: torch.device, **stored: torch.Tensor) -> Any:
        """This layer with its stored tensors and bias set, on `device` (what every constructor ends with)."""
        for name, tensor in stored.items():
            setattr(self, name, tensor.contiguous())
        if bias is not None:
            assert self.bias is not None  # the constructor made the bias parameter
            self.bias.data = bias.detach().float().clone()
        return self.to(device)

    def _kernel(self, device: torch.device) -> str | None:
        return plan(self.scheme, device, getattr(self, "group_size", 0)).kernel

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        raise NotImplementedError

    def weight_counts(self) -> tuple[int, int]:
        """(weights, non-zero weights) as the layer computes with them; read by evaluate.memory."""
        return self.in_features * self.out_features, int(self.dequantized().count_nonzero())

    def _finish(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 (weights: per output channel; activations: per token):
    w ≈ q · scale[:, None], |q| ≤ 127."""
    scale = w.abs().amax(dim=1).float().clamp(min=1e-12) / 127
    q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(QuantLinear):
    """int8 weights, fp activations. Few rows: torch's int8 weight-only kernel; many: de-quantize."""

    scheme = "int8"

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias)
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls.from_int(*int8_rows(linear.weight.detach()), linear.bias)

    @classmethod
    def from_int(cls, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> Int8Linear:
        layer = cls(qweight.shape[1], qweight.shape[0], bias is not None)
        return layer._filled(bias, qweight.device, qweight=qweight, scale=scale.float())

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.qweight.float() * self.scale.float()[:, None]).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] <= SMALL_BATCH_ROWS and self._kernel(x.device):
            # The kernel is fast for bf16 activations only (fp32 ones take a scalar path, 6× slower).
            y = torch._weight_int8pack_mm(x2.to(torch.bfloat16), self.qweight, self.scale.to(torch.bfloat16))
        else:
            y = F.linear(x2, self.dequantized(x.dtype))
        return self._finish(y, x)


class W8A8Linear(Int8Linear):
    """int8 weights and int8 activations (one dynamic scale per token), int32 accumulation."""

    scheme = "w8a8"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, x_scale = int8_rows(x.reshape(-1, self.in_features))  # one scale per token
        x_scale = x_scale[:, None]  # [rows, 1]
        if self._kernel(x.device):
            rows = xq.shape[0]
            if x.device.type == "cuda" and rows <= 16:  # cuBLAS int8 gemm wants more than 16 rows
                xq = F.pad(xq, (0, 0, 0, 17 - rows))
            acc = torch._int_mm(xq, self.qweight.t())[:rows].float()
        else:  # same arithmetic, no int8 kernel: exact in float64 for these magnitudes
            acc = (xq.double() @ self.qweight.double().t()).float()
        return self._finish(acc * x_scale * self.scale[None, :], x)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] codes 0..15 → [N, K/2] uint8, even column in the low nibble."""
    c = codes.to(torch.uint8)
    return c[:, 0::2] | (c[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)


class Int4Linear(QuantLinear):
    """Group-wise 4-bit (or fewer) weights: w[n, k] = (code - 8) · scale[n, g] + offset[n, g], g = k // G.

    Symmetric grids have offset 0. GPTQ's 3- and 2-bit codes use the same 4-bit container.
    """

    scheme = "int4"

    def __init__(self, in_features: int, out_features: int, bias: bool = False, group_size: int = 128) -> None:
        super().__init__(in_features, out_features, bias)
        self.group_size = group_size
        groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, groups, dtype=torch.float32))
        self.register_buffer("offset", torch.zeros(out_features, groups, dtype=torch.float32))
        self._packed: tuple[Any, ...] | None = None  # (device, qweight version, packed, scales_and_zeros)

    @classmethod
    def from_codes(
        cls, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int, bias: torch.Tensor | None
    ) -> Int4Linear:
        out_features, in_features = codes.shape
        layer = cls(in_features, out_features, bias is not None, group_size)
        return layer._filled(
            bias, codes.device, qweight=pack_nibbles(codes), scale=scale.float(), offset=offset.float()
        )

    def codes(self) -> torch.Tensor:
        return unpack_nibbles(self.qweight)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        g = self.group_size
        codes = self.codes().float().reshape(self.out_features, -1, g)
        w = (codes - INT4_CENTER) * self.scale[:, :, None] + self.offset[:, :, None]
        return w.reshape(self.out_features, self.in_features).to(dtype)

    def _kernel_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        key = (self.qweight.device, self.qweight.data_ptr(), self.scale.data_ptr(), self.offset.data_ptr())
        if self._packed is None or self._packed[0] != key:
            packed = torch._convert_weight_to_int4pack_for_cpu(self.codes().to(torch.int32), 1)
            # The kernel's "zeros" are the offsets: it computes (code - 8) · scale + zero.
            scales_and_zeros = torch.stack([self.scale.t(), self.offset.t()], dim=-1).to(torch.bfloat16).contiguous()
            self._packed = (key, packed, scales_and_zeros)
        return self._packed[1], self._packed[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] <= SMALL_BATCH_ROWS and self._kernel(x.device):
            packed, scales_and_zeros = self._kernel_layout()
            y = torch._weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16), packed, self.group_size, scales_and_zeros)
        else:
            y = F.linear(x2, self.dequantized(x.dtype))
        return self._finish(y, x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group_size={self.group_size}"


class FP8Linear(QuantLinear):
    """fp8 e4m3 weights (per-output-channel scale), dynamic per-token fp8 activations, bf16 output."""

    scheme = "fp8"
    FP8_MAX = 448.0  # largest finite float8_e4m3fn

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias)
        # The fp8 bits are kept as uint8, so `model.to(torch.bfloat16)` (a precision step after fp8) cannot
        # cast them: torch converts every floating-point buffer, float8 included.
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> FP8Linear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / cls.FP8_MAX
        qweight = (w / scale[:, None]).to(torch.float8_e4m3fn).view(torch.uint8)
        return layer._filled(linear.bias, w.device, qweight=qweight, scale=scale)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.fp8_weight().float() * self.scale.float()[:, None]).to(dtype)

    def fp8_weight(self) -> torch.Tensor:
        return self.qweight.view(torch.float8_e4m3fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features).float()
        x_scale = x2.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / self.FP8_MAX
        xq = (x2 / x_scale).to(torch.float8_e4m3fn)
        if self._kernel(x.device):
            y = torch._scaled_mm(
                xq,
                self.fp8_weight().t(),
                scale_a=x_scale,
                scale_b=self.scale.float()[None, :],
                out_dtype=torch.bfloat16,
            )
        else:
            y = (xq.float() * x_scale) @ self.dequantized().t()
        return self._finish(y, x)


MODULES: dict[str, type[QuantLinear]] = {"int8": Int8Linear, "w8a8": W8A8Linear, "int4": Int4Linear, "fp8": FP8Linear}
