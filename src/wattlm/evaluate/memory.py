"""Peak memory of one variant, and its size and parameter counts.

CPU: the process's peak resident set (VmHWM). Linux lets a process reset that peak by writing
"5" to /proc/self/clear_refs, so each variant gets its own peak; where that is refused the
process-lifetime peak is reported and the method says so. GPU: torch's peak allocated bytes.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any


def resident_bytes(device: Any, proc: str | Path = "/proc/self") -> int | None:
    """Memory the process holds now: resident set (VmRSS) on CPU, torch's allocated bytes on a GPU."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.memory_allocated(device))
    try:
        for line in (Path(proc) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


class PeakMemory:
    """`held_bytes`: memory the process holds for other variants (bench --rounds keeps every variant
    built for its later rounds); subtracted from the peak, and the method says so."""

    def __init__(self, device: Any, proc: str | Path = "/proc/self", held_bytes: int = 0) -> None:
        self.device = device
        self.proc = Path(proc)
        self.held_bytes = max(0, held_bytes)
        self.method = ""

    def reset(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated during the prefill and decode phases"
            return
        try:
            (self.proc / "clear_refs").write_text("5")
            self.method = "peak RSS (VmHWM) during the prefill and decode phases"
        except OSError:
            self.method = "peak RSS of the whole process so far (resetting the peak was refused)"

    def peak_bytes(self) -> int:
        peak = self._peak_bytes()
        if not self.held_bytes:
            return peak
        self.method += f", less {self.held_bytes / 2**20:,.0f} MiB held for the variants built before it"
        return max(0, peak - self.held_bytes)

    def _peak_bytes(self) -> int:
        if self.device.type == "cuda":
            import torch

            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            for line in (self.proc / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
        except OSError:
            pass
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
        self.method = "peak RSS of the whole process (getrusage)"
        return int(peak if sys.platform == "darwin" else peak * 1024)


def model_stats(model: Any) -> dict[str, int | None]:
    """Parameters (tied weights counted once; a quantized layer's weights count as parameters too),
    non-zero parameters, and bytes held in memory (parameters and buffers, so packed weights count as stored)."""
    seen: set[int] = set()
    total = nonzero = size = 0
    countable = True
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        size += tensor.numel() * tensor.element_size()
    for p in {id(p): p for p in model.parameters()}.values():
        total += p.numel()
        try:
            nonzero += int(p.count_nonzero())
        except (NotImplementedError, RuntimeError):  # a tensor subclass (e.g. torchao's) without count_nonzero
            countable = False
    for module in model.modules():  # quantized layers keep their weights in buffers, not parameters
        counts = getattr(module, "weight_counts", None)
        if counts is not None:
            n, nz = counts()
            total, nonzero = total + n, nonzero + nz
    return {"params_total": total, "params_nonzero": nonzero if countable else None, "model_bytes": size}


def torch_thread_settings() -> dict[str, Any]:
    """torch's intra-op and inter-op threads and the OpenMP wait policy the process runs with."""
    import os

    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # None: the OpenMP runtime's default
    }
