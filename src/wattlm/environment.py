"""What a result was measured on: CPU, threads, accelerator, library versions, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .cpuinfo import first_processor, flags, model_name

# CPU features that change how fast (and how efficiently) the kernels run.
_FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
)


def _git_sha() -> str | None:
    """The commit of the wattlm checkout, when it runs from one (local command, no network)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    """The machine and wattlm's own version, without importing torch (`wattlm load` does not need it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        wattlm_version = version("wattlm")
    except PackageNotFoundError:
        wattlm_version = None
    fields = first_processor()
    present = flags(fields)
    return {
        "cpu": model_name(fields),
        "cpu_flags": [f for f in _FLAGS_OF_INTEREST if f in present],
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wattlm": wattlm_version,
        "git_sha": _git_sha(),
    }


def environment(device: Any = None) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def v(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    env: dict[str, Any] = machine()
    env.update(
        {
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": v("transformers"),
            "llama_cpp_python": v("llama-cpp-python"),  # the llama.cpp engine, when installed
            "device": str(device) if device is not None else None,
        }
    )
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = props.name
        env["gpu_memory_bytes"] = props.total_memory
        env["cuda"] = torch.version.cuda
    return env
