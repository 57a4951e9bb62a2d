"""What every GPU vendor source shares: a counter read at the edges, or polled power integrated.

The vendor modules (nvml.py, amdsmi.py) only find the devices and say how to read one; this class
does the bookkeeping, so both vendors behave the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import Channel, EnergySource, NullSource, PowerIntegrator, Probe, Reading

# Power polled more slowly than 10 Hz misses the short spikes of LLM decode steps.
MAX_POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class VendorCalls:
    """How to read one GPU with a vendor library."""

    energy_j: Callable[[Any], float]  # cumulative energy counter, in J
    power_w: Callable[[Any], float]  # instantaneous power, in W
    errors: tuple[type[BaseException], ...]  # what the library raises for a failed call
    shutdown: Callable[[], None]


@dataclass
class GpuDevice:
    handle: Any
    index: int
    uuid: str
    name: str
    mode: str = ""  # "counter" (energy counter) or "power" (polled and integrated); set by open_gpus
    shared: bool = False
    note: str = ""
    origin_j: float = 0.0
    last_j: float = 0.0
    gaps: int = 0
    integrator: PowerIntegrator = field(default_factory=PowerIntegrator)


def _pick_mode(handle: Any, calls: VendorCalls) -> str | None:
    """'counter' when the energy counter answers, else 'power' when power does, else None."""
    for mode, call in (("counter", calls.energy_j), ("power", calls.power_w)):
        try:
            call(handle)
            return mode
        except calls.errors:
            continue
    return None


def open_gpus(
    name: str,
    candidates: list[GpuDevice],
    notes: list[str],
    calls: VendorCalls,
    *,
    poll_interval_s: float,
    counter_update_s: float,
) -> tuple[EnergySource, Probe]:
    """Choose how to measure each visible GPU and build the source, or a placeholder and the reason.

    Args:
        candidates: the visible GPUs, `mode` not yet set.
        notes: what the vendor module noticed on the way (ignored visibility entries, ...).
    """
    devices, unmeasured = [], []
    for device in candidates:
        mode = _pick_mode(device.handle, calls)
        if mode is None:
            unmeasured.append(
                f"{device.name} (index {device.index}) supports neither the energy counter nor power readings"
            )
            continue
        device.mode = mode
        devices.append(device)
    remarks = unmeasured + notes
    poll_interval_s = min(poll_interval_s, MAX_POLL_INTERVAL_S)
    if not devices:
        calls.shutdown()
        return NullSource(name), Probe(name, False, "; ".join(remarks) or f"no visible GPU for {name}")
    source = GpuSource(name, devices, calls, poll_interval_s=poll_interval_s, counter_update_s=counter_update_s)
    source.warnings = tuple(remarks)
    described = [
        f"{d.name} (index {d.index}): "
        + ("energy counter" if d.mode == "counter" else f"power polled every {poll_interval_s:g} s, integrated")
        + (f", shared ({d.note})" if d.shared else "")
        for d in devices
    ]
    return source, Probe(name, True, "; ".join(described + remarks))


class GpuSource(EnergySource):
    def __init__(
        self,
        name: str,
        devices: list[GpuDevice],
        calls: VendorCalls,
        *,
        poll_interval_s: float,
        counter_update_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._devices = devices
        self._calls = calls
        self._clock = clock
        polls = any(d.mode == "power" for d in devices)
        self.max_read_interval_s = poll_interval_s if polls else None
        self.update_period_s = poll_interval_s if polls else counter_update_s
        self._channels = tuple(
            Channel(
                key=f"{name}:{d.uuid}",
                domain="gpu",
                label=f"{d.name} (index {d.index})",
                source=name,
                provenance="counter" if d.mode == "counter" else "integrated",
                shared=d.shared,
                note=d.note,
            )
            for d in devices
        )

    def channels(self) -> tuple[Channel, ...]:
        return self._channels

    def open(self) -> None:
        for d in self._devices:
            d.gaps, d.last_j = 0, 0.0
            if d.mode == "counter":
                d.origin_j = self._calls.energy_j(d.handle)
            else:
                d.integrator = PowerIntegrator()
                d.integrator.add(self._clock(), self._calls.power_w(d.handle))

    def read(self) -> dict[str, Reading]:
        out = {}
        for d, channel in zip(self._devices, self._channels):
            try:
                if d.mode == "counter":
                    d.last_j = self._calls.energy_j(d.handle) - d.origin_j
                else:
                    d.integrator.add(self._clock(), self._calls.power_w(d.handle))
                    d.last_j = d.integrator.energy_j
            except self._calls.errors:
                d.gaps += 1  # keep the last good value; the window reports the gap
            out[channel.key] = Reading(d.last_j, d.gaps)
        return out

    def close(self) -> None:
        try:
            self._calls.shutdown()
        except self._calls.errors:
            pass  # the library is already shut down
