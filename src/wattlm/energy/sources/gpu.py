"""What every GPU vendor source shares: a counter read at the edges, or polled power integrated.

The vendor modules (nvml.py, amdsmi.py) only find the devices and say how to read one; this class
does the bookkeeping, so both vendors behave the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import Channel, EnergySource, PowerIntegrator, Reading


@dataclass
class GpuDevice:
    handle: Any
    index: int
    uuid: str
    name: str
    mode: str  # "counter" (energy counter) or "power" (polled and integrated)
    shared: bool = False
    note: str = ""
    origin_j: float = 0.0
    last_j: float = 0.0
    gaps: int = 0
    integrator: PowerIntegrator = field(default_factory=PowerIntegrator)


def pick_mode(
    handle: Any,
    energy_j: Callable[[Any], float],
    power_w: Callable[[Any], float],
    errors: tuple[type[BaseException], ...],
) -> str | None:
    """'counter' when the energy counter answers, else 'power' when power does, else None."""
    for mode, call in (("counter", energy_j), ("power", power_w)):
        try:
            call(handle)
            return mode
        except errors:
            continue
    return None


def describe(devices: list[GpuDevice], poll_interval_s: float) -> list[str]:
    return [
        f"{d.name} (index {d.index}): "
        + ("energy counter" if d.mode == "counter" else f"power polled every {poll_interval_s:g} s, integrated")
        + (f", shared ({d.note})" if d.shared else "")
        for d in devices
    ]


class GpuSource(EnergySource):
    def __init__(
        self,
        name: str,
        devices: list[GpuDevice],
        *,
        energy_j: Callable[[Any], float],
        power_w: Callable[[Any], float],
        errors: tuple[type[BaseException], ...],
        shutdown: Callable[[], None],
        poll_interval_s: float,
        counter_update_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._devices = devices
        self._energy_j, self._power_w, self._errors = energy_j, power_w, errors
        self._shutdown = shutdown
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
                d.origin_j = self._energy_j(d.handle)
            else:
                d.integrator = PowerIntegrator()
                d.integrator.add(self._clock(), self._power_w(d.handle))

    def read(self) -> dict[str, Reading]:
        out = {}
        for d, channel in zip(self._devices, self._channels):
            try:
                if d.mode == "counter":
                    d.last_j = self._energy_j(d.handle) - d.origin_j
                else:
                    d.integrator.add(self._clock(), self._power_w(d.handle))
                    d.last_j = d.integrator.energy_j
            except self._errors:
                d.gaps += 1  # keep the last good value; the window reports the gap
            out[channel.key] = Reading(d.last_j, d.gaps)
        return out

    def close(self) -> None:
        try:
            self._shutdown()
        except self._errors:
            pass  # the library is already shut down
