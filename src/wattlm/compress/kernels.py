"""Which matmul kernel a quantized layer runs on this device, and whether that is a fast one.

A quantization saves energy only where a kernel reads the narrow weights directly; without one the
layer de-quantizes its weights on every call and runs a dense matmul — slower than not quantizing.
Each scheme has one kernel per device type (torch's own ops: no extra dependency); `plan()` probes
it once with a tiny call and says, before anything runs, which path a scheme will take and why.

Measured on a 2-vCPU AMD EPYC (AVX-512, VNNI, BF16), torch 2.13, SmolLM2-135M shapes (µs per call):
    576×576,  1 token:  fp32 28, bf16 36, int8-weight (bf16 act.) 13, w8a8 24, int4-g64 (bf16 act.) 15
    576×576, 512 tokens: fp32 1772, bf16 847, int8-weight 2355, w8a8 715, int4 2036
The weight-only kernels win for a few tokens (decode) and lose for many (prefill), so weight-only
layers switch to de-quantize + dense matmul above SMALL_BATCH_ROWS rows; w8a8 wins at both sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

SMALL_BATCH_ROWS = 16  # weight-only kernels for ≤ this many rows (tokens × batch), dense above


@dataclass(frozen=True)
class KernelPlan:
    scheme: str  # "int8", "w8a8", "int4", "fp8"
    device: str  # "cpu", "cuda", ...
    kernel: str | None  # the op used for few-token calls, None when there is none here
    fast: bool  # False: a fallback that should not be expected to save time or energy
    note: str

    def warning(self) -> str | None:
        """What to tell the user before a run, or None when the path is fast."""
        if self.fast:
            return None
        return f"{'slow path' if self.scheme in _KERNELS else 'no speed-up'} on {self.device}: {self.note}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "device": self.device,
            "kernel": self.kernel,
            "fast": self.fast,
            "note": self.note,
        }


def cpu_flags() -> frozenset[str]:
    from ..cpuinfo import cpu_flags as read

    return read()


@cache
def _works(op: str, device_type: str) -> bool:
    """Does `op` run on this device with this torch build? A 32×32 call, once per process."""
    import torch

    device = torch.device(device_type)
    try:
        if op == "int8_weight":
            x = torch.randn(2, 32, dtype=torch.bfloat16, device=device)
            w = torch.randint(-127, 127, (32, 32), dtype=torch.int8, device=device)
            torch._weight_int8pack_mm(x, w, torch.ones(32, dtype=torch.bfloat16, device=device))
        elif op == "int_mm":
            a = torch.randint(-127, 127, (32, 32), dtype=torch.int8, device=device)
            torch._int_mm(a, a.t().contiguous())
        elif op == "int4_cpu":
            q = torch.randint(0, 16, (32, 64), dtype=torch.int32)
            packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
            torch._weight_int4pack_mm_for_cpu(
                torch.randn(2, 64, dtype=torch.bfloat16), packed, 32, torch.ones(2, 32, 2, dtype=torch.bfloat16)
            )
        elif op == "scaled_mm":
            a = torch.randn(16, 32, device=device).to(torch.float8_e4m3fn)
            b = torch.randn(32, 32, device=device).to(torch.float8_e4m3fn).t().contiguous().t()
            one = torch.ones(16, 1, device=device)
            torch._scaled_mm(a, b, scale_a=one, scale_b=torch.ones(1, 32, device=device), out_dtype=torch.bfloat16)
        else:
            raise ValueError(op)
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return False
    return True


INT4_CPU_GROUPS = (32, 64, 128, 256)  # group sizes torch's CPU int4 kernel accepts


def plan(scheme: str, device: Any, group_size: int = 0) -> KernelPlan:
    """The path `scheme` (with `group_size` for int4) takes on `device` (a torch.device or its type name)."""
    return _plan(scheme, getattr(device, "type", str(device)), group_size)


@dataclass(frozen=True)
class _Kernel:
    probe: str  # what _works() tries
    op: str
    devices: tuple[str, ...]  # device types the op is wired for
    note: str
    cpu_flags: frozenset[str]  # any of these makes it fast on a CPU
    without_flags: str  # the note's addition when the CPU has none of them
    fallback: str  # what happens where the op does not run


_KERNELS = {
    "int8": _Kernel(
        "int8_weight",
        "_weight_int8pack_mm",
        ("cpu", "cuda", "mps"),
        "torch._weight_int8pack_mm (bf16 activations) for ≤ 16 rows, de-quantize + dense above",
        frozenset({"avx512f", "avx2", "asimd"}),
        "this CPU has no AVX2/AVX-512/NEON, so the kernel is scalar and may be slower than bf16",
        "no int8 weight-only kernel here: weights are de-quantized on every call (slower than not quantizing)",
    ),
    "w8a8": _Kernel(
        "int_mm",
        "_int_mm",
        ("cpu", "cuda"),
        "torch._int_mm (int8×int8→int32) with per-token activation scales",
        frozenset({"avx512_vnni", "avx_vnni", "amx_int8"}),
        "this CPU has no VNNI/AMX int8 dot-product instructions, so it may be slower than bf16",
        "no int8×int8 matmul here: activations and weights are de-quantized (fake quantization; slower than not"
        " quantizing)",
    ),
    "int4": _Kernel(
        "int4_cpu",
        "_weight_int4pack_mm_for_cpu",
        ("cpu",),
        "torch._weight_int4pack_mm_for_cpu (bf16 activations) for ≤ 16 rows, de-quantize + dense above",
        frozenset({"avx512f", "avx2"}),
        "this CPU has no AVX2/AVX-512, so the kernel is scalar",
        "no int4 kernel is wired for this device: weights are de-quantized on every call (no speed-up, only a smaller"
        " file)",
    ),
    "fp8": _Kernel(
        "scaled_mm",
        "_scaled_mm",
        ("cuda",),
        "torch._scaled_mm on fp8 tensor cores, row-wise scales",
        frozenset(),
        "",
        "fp8 needs a CUDA GPU with fp8 tensor cores (compute capability 8.9+, e.g. L4, H100)",
    ),
}


@cache  # layers ask on every forward: answer from memory after the first probe
def _plan(scheme: str, kind: str, group_size: int) -> KernelPlan:
    k = _KERNELS.get(scheme)
    if k is None:
        raise ValueError(f"unknown scheme {scheme!r}")
    if scheme == "int4" and kind == "cpu" and group_size and group_size not in INT4_CPU_GROUPS:
        groups = ", ".join(map(str, INT4_CPU_GROUPS))
        return KernelPlan(
            scheme,
            kind,
            None,
            False,
            f"torch's CPU int4 kernel takes groups of {groups}, not {group_size}: weights are de-quantized on every"
            " call",
        )
    if kind not in k.devices or not _works(k.probe, kind):
        return KernelPlan(scheme, kind, None, False, k.fallback)
    fast = kind != "cpu" or not k.cpu_flags or bool(cpu_flags() & k.cpu_flags)
    return KernelPlan(scheme, kind, k.op, fast, k.note if fast else f"{k.note}; {k.without_flags}")


def plan_dense(config: Any, device: Any) -> KernelPlan:
    """Pruned and shared models run on the dense kernels; say what that means for their speed."""
    kind = getattr(device, "type", str(device))
    technique = config.technique
    if technique == "struct":
        return KernelPlan(
            "dense", kind, "dense", True, "a smaller dense model: fewer FLOPs and bytes on the same dense kernels"
        )
    if technique == "share":
        return KernelPlan(
            "dense",
            kind,
            "dense",
            False,
            "shared weights are read once per layer that uses them: same compute, less memory and file size only",
        )
    if config.method == "l2shrink":
        note = "l2shrink scales weights down without zeroing them: same model size and compute"
    elif config.m:
        note = (
            f"{config.n}:{config.m} sparsity runs on the dense kernels here (wattlm uses no semi-structured sparse"
            " kernel): the zeros are still multiplied, so expect no speed-up"
        )
    else:
        note = (
            "unstructured sparsity runs on the dense kernels: the zeros are still multiplied, so expect no speed-up or"
            " energy saving"
        )
    return KernelPlan("sparse", kind, "dense", False, note)
