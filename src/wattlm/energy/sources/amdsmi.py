"""AMD GPU energy through amdsmi (optional extra `wattlm[amd]`), the same interface as NVML.

`amdsmi_get_energy_count` returns an accumulator in ticks of `counter_resolution` µJ (the key is
`energy_accumulator` in recent releases and `power` in older ones). Where it is missing, socket power
(W) is polled and integrated. Visibility follows HIP_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES, then
CUDA_VISIBLE_DEVICES, as HIP does.
"""

from __future__ import annotations

from typing import Any

from ...units import uj_to_j
from .base import EnergySource, NullSource, Probe
from .gpu import GpuDevice, SharedLibrary, VendorCalls, open_gpus
from .visible import select_visible, visible_spec

_COUNTER_UPDATE_S = 0.01  # the accumulator advances on the SMU's ~1 ms tick; 10 ms is a safe bound
_POWER_KEYS = ("socket_power", "current_socket_power", "average_socket_power")


def probe_amdsmi(poll_interval_s: float = 0.1) -> tuple[EnergySource, Probe]:
    """Open every visible AMD GPU, or return a placeholder and the reason."""
    try:
        import amdsmi
    except ImportError:
        return NullSource("amdsmi"), Probe("amdsmi", False, "amdsmi is not installed (pip install 'wattlm[amd]')")
    except Exception as e:  # amdsmi raises its own errors at import when libamd_smi.so is missing
        return NullSource("amdsmi"), Probe("amdsmi", False, f"amdsmi did not load ({e}): no ROCm on this machine")
    errors = (amdsmi.AmdSmiException,)
    library = SharedLibrary("amdsmi", amdsmi.amdsmi_init, amdsmi.amdsmi_shut_down)
    try:
        library.acquire()
    except errors as e:
        return NullSource("amdsmi"), Probe("amdsmi", False, f"amdsmi did not start ({e}): no AMD GPU driver")
    try:
        handles = list(amdsmi.amdsmi_get_processor_handles())
        uuids = [str(amdsmi.amdsmi_get_gpu_device_uuid(h)) for h in handles]
    except errors as e:
        library.release()
        return NullSource("amdsmi"), Probe("amdsmi", False, f"amdsmi could not list the GPUs ({e})")
    spec = visible_spec("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
    selected, notes = select_visible(uuids, spec)

    def energy_j(handle: Any) -> float:
        info = amdsmi.amdsmi_get_energy_count(handle)
        ticks = info.get("energy_accumulator", info.get("power"))
        return uj_to_j(float(ticks) * float(info["counter_resolution"]))

    def power_w(handle: Any) -> float:
        info = amdsmi.amdsmi_get_power_info(handle)
        for key in _POWER_KEYS:
            value = info.get(key)
            if isinstance(value, (int, float)):  # "N/A" on parts that lack the field
                return float(value)
        raise amdsmi.AmdSmiException("no socket power field")

    candidates = []
    for sel in selected:
        handle = handles[sel.index]
        try:
            name = str(amdsmi.amdsmi_get_gpu_asic_info(handle).get("market_name", "AMD GPU"))
        except errors:
            name = "AMD GPU"
        candidates.append(GpuDevice(handle, sel.index, uuids[sel.index], name))
    return open_gpus(
        "amdsmi",
        candidates,
        notes,
        VendorCalls(energy_j, power_w, errors, library.release),
        poll_interval_s=poll_interval_s,
        counter_update_s=_COUNTER_UPDATE_S,
    )
