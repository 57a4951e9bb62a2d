"""AMD GPU energy through amdsmi (optional extra `wattlm[amd]`), the same interface as NVML.

`amdsmi_get_energy_count` returns an accumulator in ticks of `counter_resolution` µJ (the key is
`energy_accumulator` in recent releases and `power` in older ones). Where it is missing, socket power
(W) is polled and integrated. Visibility follows HIP_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES, then
CUDA_VISIBLE_DEVICES, as HIP does.
"""

from __future__ import annotations

import re
from typing import Any

from ...units import uj_to_j
from .base import EnergySource, NullSource, Probe
from .gpu import GpuDevice, SharedLibrary, VendorCalls, open_gpus
from .visible import Selected, select_visible, visible_spec

_COUNTER_UPDATE_S = 0.01  # the accumulator advances on the SMU's ~1 ms tick; 10 ms is a safe bound
_POWER_KEYS = ("socket_power", "current_socket_power", "average_socket_power")
DUAL_DIE = re.compile(r"MI250")  # two dies (GCDs), enumerated as two devices


def _reads_zero(energy_j: Any, handle: Any, errors: tuple[type[BaseException], ...]) -> bool:
    try:
        return energy_j(handle) == 0.0
    except errors:
        return False


def _visible(
    amdsmi: Any, handles: list[Any], uuids: list[str], errors: tuple[type[BaseException], ...]
) -> tuple[list[Selected], list[str]]:
    """The GPUs this process sees, as HIP numbers them.

    HIP_VISIBLE_DEVICES (or CUDA_VISIBLE_DEVICES) indexes the devices ROCR_VISIBLE_DEVICES left
    visible, in HIP's order, and its `GPU-` UUIDs are HIP's; amdsmi enumerates in its own order with
    its own UUIDs. amdsmi's enumeration info gives each device's HIP id and UUID, which maps one onto
    the other; without it (older amdsmi) amdsmi's order is assumed and said.
    """
    try:
        info = [amdsmi.amdsmi_get_gpu_enumeration_info(h) for h in handles]
        order = sorted(range(len(handles)), key=lambda i: int(info[i]["hip_id"]))
        hip_uuids = [str(info[i].get("hip_uuid") or uuids[i]) for i in order]
        notes: list[str] = []
    except (AttributeError, KeyError, TypeError, ValueError) + errors:
        order, hip_uuids = list(range(len(handles))), list(uuids)
        notes = [
            "amdsmi gives no HIP ids here (amdsmi_get_gpu_enumeration_info): HIP's device order is assumed"
            " to be amdsmi's"
        ]
    rocr, rocr_notes = select_visible(hip_uuids, visible_spec("ROCR_VISIBLE_DEVICES"))
    hip_spec = visible_spec("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
    hip, hip_notes = select_visible([hip_uuids[s.index] for s in rocr], hip_spec)
    selected = [Selected(order[rocr[s.index].index], s.shared, s.note) for s in hip]
    return selected, notes + rocr_notes + hip_notes


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
    selected, notes = _visible(amdsmi, handles, uuids, errors)

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

    candidates: list[GpuDevice] = []
    for sel in selected:
        handle = handles[sel.index]
        try:
            name = str(amdsmi.amdsmi_get_gpu_asic_info(handle).get("market_name", "AMD GPU"))
        except errors:
            name = "AMD GPU"
        sibling = candidates[-1] if candidates and candidates[-1].index == sel.index - 1 else None
        if sibling is not None and DUAL_DIE.search(name) and _reads_zero(energy_j, handle, errors):
            # An MI250/MI250X is two dies; the odd die's counter reads 0 and the even die's counts
            # both. The package is reported once, through the die that counts, flagged shared.
            sibling.shared = True
            sibling.note = f"its counter covers both dies of this {name} (index {sel.index} reads 0)"
            continue
        candidates.append(GpuDevice(handle, sel.index, uuids[sel.index], name))
    return open_gpus(
        "amdsmi",
        candidates,
        notes,
        VendorCalls(energy_j, power_w, errors, library.release),
        poll_interval_s=poll_interval_s,
        counter_update_s=_COUNTER_UPDATE_S,
    )
