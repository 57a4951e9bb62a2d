"""A fake `pynvml` module: the same functions and error type, driven by plain Python state.

Tests install it with monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(...)), so the real probing
code imports and calls it exactly as it would call nvidia-ml-py.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field


class NVMLError(Exception):
    def __init__(self, value: int = 999):
        super().__init__(f"NVML error {value}")
        self.value = value


NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_UNINITIALIZED = 1


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: Callable[[], float] | None = None  # None: counter not supported
    power_mw: Callable[[], float] | None = None  # None: power not supported
    mig_enabled: bool = False
    migs: list[str] = field(default_factory=list)
    refuse_handle: bool = False  # GetHandleByIndex answers NO_PERMISSION (a cgroup-limited job)
    name_error: bool = False  # GetName fails
    power_limit_mw: int = 700_000
    limit_range_mw: tuple[int, int] = (200_000, 700_000)
    locked_clocks: tuple[int, int] | None = None
    settings_refused: bool = False  # setting limits or clocks answers NO_PERMISSION (not root)


def make_fake_nvml(
    gpus: list[FakeGpu], *, init_error: bool = False, on_change: Callable[[], None] | None = None
) -> types.ModuleType:
    """`on_change` is called after every change of a power limit or clocks (to persist them)."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = NVMLError
    mod.NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    state = {"init": 0, "shutdown": 0}
    mod.state = state
    mig_parent = {mig: gpu for gpu in gpus for mig in gpu.migs}

    def nvmlInit():
        if init_error:
            raise NVMLError(9)  # NVML_ERROR_DRIVER_NOT_LOADED
        state["init"] += 1

    def nvmlShutdown():
        # NVML counts its users: shutting down more often than it was started is an error.
        if state["shutdown"] >= state["init"]:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        state["shutdown"] += 1

    def unsupported():
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    mod.nvmlInit = nvmlInit
    mod.nvmlShutdown = nvmlShutdown
    mod.nvmlDeviceGetCount = lambda: len(gpus)

    def handle_by_index(i):
        if gpus[i].refuse_handle:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        return gpus[i]

    def name_of(h):
        if h.name_error:
            raise NVMLError(999)
        return h.name.encode()  # older bindings return bytes

    mod.nvmlDeviceGetHandleByIndex = handle_by_index
    mod.nvmlDeviceGetUUID = lambda h: h.uuid
    mod.nvmlDeviceGetName = name_of
    mod.nvmlDeviceGetTotalEnergyConsumption = lambda h: h.energy_mj() if h.energy_mj else unsupported()
    mod.nvmlDeviceGetPowerUsage = lambda h: h.power_mw() if h.power_mw else unsupported()

    def get_mig_mode(h):
        return [1, 1] if h.mig_enabled else unsupported()

    def by_uuid(uuid):
        if uuid in mig_parent:
            return ("mig", uuid)
        for gpu in gpus:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError(13)  # NVML_ERROR_NOT_FOUND

    def parent_of(handle):
        if isinstance(handle, tuple) and handle[0] == "mig":
            return mig_parent[handle[1]]
        raise NVMLError(2)

    def settable(h):
        if h.settings_refused:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)

    def set_limit(h, mw):
        settable(h)
        if not h.limit_range_mw[0] <= mw <= h.limit_range_mw[1]:
            raise NVMLError(2)  # NVML_ERROR_INVALID_ARGUMENT
        h.power_limit_mw = int(mw)
        if on_change:
            on_change()

    def lock(h, low, high):
        settable(h)
        h.locked_clocks = (int(low), int(high))
        if on_change:
            on_change()

    def reset(h):
        settable(h)
        h.locked_clocks = None
        if on_change:
            on_change()

    mod.nvmlDeviceGetPowerManagementLimit = lambda h: h.power_limit_mw
    mod.nvmlDeviceGetPowerManagementLimitConstraints = lambda h: h.limit_range_mw
    mod.nvmlDeviceSetPowerManagementLimit = set_limit
    mod.nvmlDeviceSetGpuLockedClocks = lock
    mod.nvmlDeviceResetGpuLockedClocks = reset
    mod.nvmlDeviceGetMigMode = get_mig_mode
    mod.nvmlDeviceGetHandleByUUID = by_uuid
    mod.nvmlDeviceGetDeviceHandleFromMigDeviceHandle = parent_of
    return mod


class Ramp:
    """Power rising linearly in real time: P(t) = p0 + slope·(t − t0). Its energy over [a, b] is
    exact for trapezoid integration, whatever the sampling."""

    def __init__(self, p0_w: float, slope_w_per_s: float):
        self.t0 = time.monotonic()
        self.p0, self.slope = p0_w, slope_w_per_s

    def power_w(self, t: float) -> float:
        return self.p0 + self.slope * (t - self.t0)

    def energy_j(self, a: float, b: float) -> float:
        return (b - a) * 0.5 * (self.power_w(a) + self.power_w(b))


class SteppingCounter:
    """An energy counter as the hardware keeps one: it advances at `watts` but only in steps, every
    `period_s` of real time (NVML's counter updates every ~10–100 ms), in mJ."""

    def __init__(self, watts: float, period_s: float = 0.01, start_mj: float = 7_000_000.0):
        self.t0, self.watts, self.period_s, self.start_mj = time.monotonic(), watts, period_s, start_mj

    def __call__(self) -> float:
        steps = int((time.monotonic() - self.t0) / self.period_s)
        return self.start_mj + steps * self.period_s * self.watts * 1000.0
