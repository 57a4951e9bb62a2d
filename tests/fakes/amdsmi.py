"""A fake `amdsmi` module with the functions and exception type the real bindings expose."""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass


class AmdSmiException(Exception):
    pass


@dataclass
class FakeAmdGpu:
    uuid: str
    ticks: Callable[[], int] | None = None  # energy accumulator; None: unsupported
    resolution_uj: float = 1e6 / 2**16  # 15.2587890625 µJ, as recent parts report it
    power_w: Callable[[], float] | None = None
    old_key: bool = False  # older releases name the accumulator "power"
    market_name: str = "AMD Instinct MI300X"
    hip_id: int | None = None  # HIP's number for it (amdsmi_get_gpu_enumeration_info); None: not reported
    hip_uuid: str = ""


def make_fake_amdsmi(gpus: list[FakeAmdGpu]) -> types.ModuleType:
    mod = types.ModuleType("amdsmi")
    mod.AmdSmiException = AmdSmiException
    # amdsmi does not count its users: one shutdown invalidates every handle in the process.
    state = {"up": False, "init": 0, "shutdown": 0}
    mod.state = state

    def live(h):
        if not state["up"]:
            raise AmdSmiException("AMDSMI_STATUS_NOT_INIT: the library was shut down; handles are invalid")
        return h

    def energy(h):
        live(h)
        if h.ticks is None:
            raise AmdSmiException("not supported")
        return {
            ("power" if h.old_key else "energy_accumulator"): h.ticks(),
            "counter_resolution": h.resolution_uj,
            "timestamp": 0,
        }

    def power(h):
        if h.power_w is None:
            return {"socket_power": "N/A", "current_socket_power": "N/A", "average_socket_power": "N/A"}
        return {"socket_power": "N/A", "current_socket_power": h.power_w(), "average_socket_power": "N/A"}

    def init():
        state["up"] = True
        state["init"] += 1

    def shut_down():
        state["up"] = False
        state["shutdown"] += 1

    mod.amdsmi_init = init
    mod.amdsmi_shut_down = shut_down
    mod.amdsmi_get_processor_handles = lambda: list(gpus)
    mod.amdsmi_get_gpu_device_uuid = lambda h: h.uuid
    mod.amdsmi_get_gpu_asic_info = lambda h: {"market_name": h.market_name}
    mod.amdsmi_get_energy_count = energy
    mod.amdsmi_get_power_info = power
    if any(g.hip_id is not None for g in gpus):  # newer releases only
        mod.amdsmi_get_gpu_enumeration_info = lambda h: {
            "drm_card": 0,
            "hsa_id": 0,
            "hip_id": h.hip_id,
            "hip_uuid": h.hip_uuid,
        }
    return mod
