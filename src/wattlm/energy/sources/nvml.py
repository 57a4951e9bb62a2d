"""NVIDIA GPU energy through NVML (`nvidia-ml-py`, optional extra `wattlm[nvidia]`).

Volta and newer expose a total-energy counter in mJ; it is read at window edges and by the sampler.
Where it is unsupported, power (mW) is polled at the meter interval (≥ 10 Hz) and integrated by
trapezoid, labelled `integrated`. A GPU with neither is listed as unmeasured: never reported as 0 J.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ...units import mj_to_j, mw_to_w
from .base import EnergySource, NullSource, Probe
from .gpu import GpuDevice, SharedLibrary, VendorCalls, open_gpus
from .visible import select_visible, visible_spec

# NVML's energy counter refreshes every few tens of ms on recent GPUs; 100 ms is a safe bound
# for the "window too short" warning.
_COUNTER_UPDATE_S = 0.1
# Without the instant-power field, GetPowerUsage is taken as a 1 s average (Ampere and newer; older
# parts refresh it more often, so this is the cautious figure for the short-window warning).
_POWER_AVERAGE_S = 1.0
# Superchips whose energy counter covers the whole module (GPU, Grace CPU and memory). Grace has
# no RAPL, so without this the CPU and DRAM would be estimated and counted a second time.
MODULE_SCOPE = re.compile(r"\bG[HB]\d{3}\b")
MODULE_NOTE = "module energy: the counter covers the GPU, the Grace CPU and memory of this module"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _mig_parent(nvml: Any, mig_uuid: str) -> str | None:
    try:
        mig = nvml.nvmlDeviceGetHandleByUUID(mig_uuid)
        return _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)))
    except nvml.NVMLError:
        return None


def _mig_enabled(nvml: Any, handle: Any) -> bool:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:
        return False  # not supported: not a MIG-capable GPU
    return bool(current)


def probe_nvml(poll_interval_s: float = 0.1) -> tuple[EnergySource, Probe]:
    """Open every visible NVIDIA GPU, or return a placeholder and the reason."""
    try:
        import pynvml as nvml
    except ImportError:
        return NullSource("nvml"), Probe("nvml", False, "nvidia-ml-py is not installed (pip install 'wattlm[nvidia]')")
    library = SharedLibrary("nvml", nvml.nvmlInit, nvml.nvmlShutdown)
    try:
        library.acquire()
    except nvml.NVMLError as e:
        return NullSource("nvml"), Probe(
            "nvml", False, f"NVML did not start ({_text(e)}): no NVIDIA driver on this machine"
        )
    try:
        count = nvml.nvmlDeviceGetCount()
    except nvml.NVMLError as e:
        library.release()
        return NullSource("nvml"), Probe(
            "nvml", False, f"NVML could not list the GPUs ({_text(e)}); check `nvidia-smi`"
        )
    # The count includes GPUs this process may not open (NO_PERMISSION in cgroup-limited jobs and
    # containers): each is skipped and reported, the others are measured.
    handles: list[Any] = []
    uuids: list[str] = []
    refused: dict[int, str] = {}
    for i in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        except nvml.NVMLError as e:
            handle, uuid = None, f"unavailable-{i}"
            refused[i] = f"GPU index {i} refused by NVML ({_text(e)}): not measured"
        handles.append(handle)
        uuids.append(uuid)
    selected, notes = select_visible(uuids, visible_spec("CUDA_VISIBLE_DEVICES"), lambda u: _mig_parent(nvml, u))
    info = []
    if len(handles) > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        info.append("CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA's device indices may differ from NVML's")

    def energy_j(handle: Any) -> float:
        return mj_to_j(float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)))

    instant_field = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)
    instant: dict[int, bool] = {}  # per handle: does the driver give instant power?

    def instant_w(handle: Any) -> float:
        (value,) = nvml.nvmlDeviceGetFieldValues(handle, [instant_field])
        if value.nvmlReturn != 0:  # this field is not supported here
            raise nvml.NVMLError(value.nvmlReturn)
        return mw_to_w(float(value.value.uiVal))

    def has_instant(handle: Any) -> bool:
        if id(handle) not in instant:
            try:
                instant[id(handle)] = instant_field is not None and instant_w(handle) >= 0
            except (nvml.NVMLError, AttributeError):
                instant[id(handle)] = False
        return instant[id(handle)]

    def power_w(handle: Any) -> float:
        # GetPowerUsage is a 1-second average on Ampere and newer; the instant field is what a
        # trapezoid over 0.1 s samples needs, where the driver has it.
        if has_instant(handle):
            return instant_w(handle)
        return mw_to_w(float(nvml.nvmlDeviceGetPowerUsage(handle)))

    def power_average_s(handle: Any) -> float:
        return 0.0 if has_instant(handle) else _POWER_AVERAGE_S

    candidates = []
    for sel in selected:
        if sel.index in refused:
            notes.append(refused[sel.index])
            continue
        handle = handles[sel.index]
        shared, note = sel.shared, sel.note
        if not shared and _mig_enabled(nvml, handle):
            shared, note = True, "MIG mode is on: other instances share this GPU's energy"
        try:
            name = _text(nvml.nvmlDeviceGetName(handle))
        except nvml.NVMLError:
            name = "NVIDIA GPU"
        covers: tuple[str, ...] = ()
        if MODULE_SCOPE.search(name):
            covers = ("cpu", "dram")
            note = "; ".join(n for n in (note, MODULE_NOTE) if n)
        candidates.append(GpuDevice(handle, sel.index, uuids[sel.index], name, shared=shared, note=note, covers=covers))
    return open_gpus(
        "nvml",
        candidates,
        notes,
        VendorCalls(energy_j, power_w, (nvml.NVMLError,), library.release, power_average_s),
        poll_interval_s=poll_interval_s,
        counter_update_s=_COUNTER_UPDATE_S,
        info=tuple(info),
    )
