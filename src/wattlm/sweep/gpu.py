"""GPU knobs of a sweep: the power limit (`gpu_power_limit_w`) and locked clocks (`gpu_clock_mhz`),
applied through NVML before a configuration and restored after it.

Before the first change the previous settings are written to a restore record on disk
(`<state dir>/gpu-restore.json`, atomically); a restore removes it. Ctrl-C and errors restore on the
way out; after a crash or kill -9 the record stays, and the next `wattlm sweep` applies it before
anything else (and says so). Changing these settings needs root (or the admin rights NVML asks for):
the sweep checks that before it starts and refuses with one line otherwise. Not yet verified on a GPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..energy.sources.nvml import _text
from ..errors import ConfigError
from ..fileio import atomic_write_text

NO_PERMISSION = 4  # NVML_ERROR_NO_PERMISSION


def state_dir() -> Path:
    return Path(os.environ.get("WATTLM_STATE_DIR") or Path.home() / ".cache" / "wattlm")


def record_path() -> Path:
    return state_dir() / "gpu-restore.json"


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError as e:
        raise ConfigError(
            "{grid}: GPU knobs need NVML: pip install 'wattlm[nvidia]' (nvidia-ml-py) on a machine with NVIDIA GPUs",
            field="grid",
        ) from e
    return pynvml


def _visible(nvml: Any) -> list[int]:
    """NVML indices of the GPUs this process may use (CUDA_VISIBLE_DEVICES, as the meter reads it; a MIG
    instance stands for its parent GPU, whose power limit it shares)."""
    from ..energy.sources.nvml import _mig_parent
    from ..energy.sources.visible import select_visible, visible_spec

    uuids = [
        _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(nvml.nvmlDeviceGetCount())
    ]
    selected, _notes = select_visible(uuids, visible_spec("CUDA_VISIBLE_DEVICES"), lambda u: _mig_parent(nvml, u))
    return [s.index for s in selected]


class GpuKnobs:
    """Apply and restore power limits and locked clocks on the visible GPUs."""

    def __init__(self) -> None:
        self.nvml = _nvml()
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as e:
            raise ConfigError(f"{{grid}}: GPU knobs need NVML, which did not start ({e})", field="grid") from e
        self.indices = _visible(self.nvml)
        if not self.indices:
            raise ConfigError("{grid}: GPU knobs given but no GPU is visible to this process", field="grid")
        self.saved: list[dict[str, Any]] | None = None

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass

    def _handle(self, index: int) -> Any:
        return self.nvml.nvmlDeviceGetHandleByIndex(index)

    def check(self, knobs: dict[str, tuple[str, ...]]) -> None:
        """Before anything starts: every value within the device's limits, and the right to change them
        (setting each setting to what it already is)."""
        for index in self.indices:
            h = self._handle(index)
            try:
                if "gpu_power_limit_w" in knobs:
                    low, high = self.nvml.nvmlDeviceGetPowerManagementLimitConstraints(h)
                    for v in knobs["gpu_power_limit_w"]:
                        if not low / 1000 <= float(v) <= high / 1000:
                            raise ConfigError(
                                f"{{grid}} gpu_power_limit_w={v}: GPU {index} accepts {low / 1000:g}-{high / 1000:g} W",
                                field="grid",
                            )
                    self.nvml.nvmlDeviceSetPowerManagementLimit(h, self.nvml.nvmlDeviceGetPowerManagementLimit(h))
                if "gpu_clock_mhz" in knobs:
                    self.nvml.nvmlDeviceResetGpuLockedClocks(h)
            except self.nvml.NVMLError as e:
                if getattr(e, "value", None) == NO_PERMISSION:
                    raise ConfigError(
                        f"{{grid}}: changing GPU {index}'s power limit or clocks needs root (NVML: no permission);"
                        " run the sweep as root, or leave gpu_power_limit_w and gpu_clock_mhz out",
                        field="grid",
                    ) from e
                raise ConfigError(f"{{grid}}: GPU {index} refused the GPU knobs ({e})", field="grid") from e

    def apply(self, power_limit_w: float | None, clock_mhz: float | None) -> dict[str, Any]:
        """Set the knobs on every visible GPU (the restore record is written first)."""
        if power_limit_w is None and clock_mhz is None:
            return {}
        if self.saved is None:
            self.saved = [
                {
                    "index": i,
                    "uuid": _text(self.nvml.nvmlDeviceGetUUID(self._handle(i))),
                    "power_limit_mw": self.nvml.nvmlDeviceGetPowerManagementLimit(self._handle(i)),
                }
                for i in self.indices
            ]
            record_path().parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(record_path(), json.dumps({"pid": os.getpid(), "devices": self.saved}, indent=1))
        for i in self.indices:
            h = self._handle(i)
            if power_limit_w is not None:
                self.nvml.nvmlDeviceSetPowerManagementLimit(h, int(round(power_limit_w * 1000)))
            if clock_mhz is not None:
                self.nvml.nvmlDeviceSetGpuLockedClocks(h, int(clock_mhz), int(clock_mhz))
            else:
                self.nvml.nvmlDeviceResetGpuLockedClocks(h)
        return {"gpu_power_limit_w": power_limit_w, "gpu_clock_mhz": clock_mhz, "gpus": list(self.indices)}

    def restore(self) -> None:
        if self.saved is None:
            return
        _restore(self.nvml, self.saved)
        self.saved = None
        record_path().unlink(missing_ok=True)


def _restore(nvml: Any, devices: list[dict[str, Any]]) -> None:
    for device in devices:
        h = nvml.nvmlDeviceGetHandleByIndex(device["index"])
        nvml.nvmlDeviceSetPowerManagementLimit(h, int(device["power_limit_mw"]))
        nvml.nvmlDeviceResetGpuLockedClocks(h)


def restore_left_over() -> str | None:
    """Apply a restore record a crashed sweep left; what was restored, or None when there was none."""
    path = record_path()
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        devices = record["devices"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: a GPU restore record that cannot be read ({e}); check the GPUs' power limits and clocks"
            " (nvidia-smi -q -d POWER,CLOCK), then delete the file",
            field="grid",
        ) from e
    nvml = _nvml()
    nvml.nvmlInit()
    try:
        _restore(nvml, devices)
    finally:
        nvml.nvmlShutdown()
    path.unlink(missing_ok=True)
    limits = ", ".join(f"GPU {d['index']} {d['power_limit_mw'] / 1000:g} W" for d in devices)
    return f"restored the GPU settings an interrupted sweep left changed: {limits}, clocks unlocked"
