"""What every GPU vendor source shares: a counter read at the edges, or polled power integrated.

The vendor modules (nvml.py, amdsmi.py) only find the devices and say how to read one; this class
does the bookkeeping, so both vendors behave the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import SourceError
from .base import Channel, EnergySource, NullSource, PowerIntegrator, Probe, Reading

# Power polled more slowly than 10 Hz misses the short spikes of LLM decode steps.
MAX_POLL_INTERVAL_S = 0.1
# A counter is trusted only if it moves while the GPU draws power: some parts answer the energy call
# with 0 or a constant (stuck counters, the odd die of a dual-die part). Checked over this long.
COUNTER_PROBE_S = 0.25
DRAWING_W = 1.0  # below this the GPU may be too idle for its counter to move in the probe


class SharedLibrary:
    """One process-wide, reference-counted handle on a vendor library.

    amdsmi's init/shutdown are not reference-counted: one meter shutting it down would invalidate
    every other meter's handles. NVML counts, but a second close() of one user would drop a count
    another holds. So every wattlm source acquires once and releases once, and only the last
    release shuts the library down.
    """

    _lock = threading.Lock()
    _users: dict[tuple[str, Callable[[], None]], int] = {}  # (name, the library's init function) → holders

    def __init__(self, name: str, init: Callable[[], None], shutdown: Callable[[], None]) -> None:
        self._init, self._shutdown = init, shutdown
        self._key = (name, init)  # the library as loaded: a reloaded (or stand-in) module counts anew

    def acquire(self) -> None:
        with SharedLibrary._lock:
            if SharedLibrary._users.get(self._key, 0) == 0:
                self._init()  # may raise: then nobody holds it
            SharedLibrary._users[self._key] = SharedLibrary._users.get(self._key, 0) + 1

    def release(self) -> None:
        with SharedLibrary._lock:
            left = SharedLibrary._users.get(self._key, 0) - 1
            SharedLibrary._users[self._key] = max(0, left)
            if left == 0:
                self._shutdown()


@dataclass(frozen=True)
class VendorCalls:
    """How to read one GPU with a vendor library."""

    energy_j: Callable[[Any], float]  # cumulative energy counter, in J
    power_w: Callable[[Any], float]  # instantaneous power, in W
    errors: tuple[type[BaseException], ...]  # what the library raises for a failed call
    shutdown: Callable[[], None]  # releases this source's hold on the library (SharedLibrary.release)
    # Seconds over which the polled power is averaged by the driver (NVML's GetPowerUsage: 1 s on
    # Ampere and newer); 0 for an instant reading. The short-window warning uses it.
    power_average_s: Callable[[Any], float] = lambda handle: 0.0


@dataclass
class GpuDevice:
    handle: Any
    index: int
    uuid: str
    name: str
    mode: str = ""  # "counter" (energy counter) or "power" (polled and integrated); set by open_gpus
    shared: bool = False
    note: str = ""
    covers: tuple[str, ...] = ()  # domains the counter includes beyond the GPU (module-scope parts)
    prev_raw_j: float = 0.0  # the counter's last reading
    last_j: float = 0.0  # energy since open(), summed over the counter's forward steps
    gaps: int = 0  # intervals left out: failed reads and backward steps of the counter
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


def _stuck_counters(
    devices: list[GpuDevice], calls: VendorCalls, probe_s: float, sleep: Callable[[float], None]
) -> dict[int, str]:
    """Devices (by position) whose counter did not move, or moved out of step with their power,
    over a `probe_s` probe while they drew power; with why."""
    counted = [i for i, d in enumerate(devices) if d.mode == "counter"]
    if not counted or probe_s <= 0:
        return {}
    start: dict[int, tuple[float, float | None]] = {}
    t0 = time.monotonic()
    for i in counted:
        try:
            power: float | None = calls.power_w(devices[i].handle)
        except calls.errors:
            power = None  # no power reading to compare with: the counter is all there is
        start[i] = (calls.energy_j(devices[i].handle), power)
    sleep(probe_s)
    dt = max(time.monotonic() - t0, probe_s)
    stuck = {}
    for i in counted:
        e0, power = start[i]
        try:
            moved_j = calls.energy_j(devices[i].handle) - e0
        except calls.errors:
            continue
        if power is None or power < DRAWING_W:
            continue
        rate_w = moved_j / dt
        if moved_j <= 0:
            stuck[i] = f"its energy counter did not move in {probe_s:g} s while it drew {power:.0f} W"
        elif not 0.2 <= rate_w / power <= 5.0:
            stuck[i] = f"its energy counter moved at {rate_w:.0f} W while it reported {power:.0f} W"
    return stuck


def open_gpus(
    name: str,
    candidates: list[GpuDevice],
    notes: list[str],
    calls: VendorCalls,
    *,
    poll_interval_s: float,
    counter_update_s: float,
    info: tuple[str, ...] = (),
    probe_s: float = COUNTER_PROBE_S,
    sleep: Callable[[float], None] | None = None,
) -> tuple[EnergySource, Probe]:
    """Choose how to measure each visible GPU and build the source, or a placeholder and the reason.

    Args:
        candidates: the visible GPUs, `mode` not yet set.
        notes: what the vendor module noticed on the way (ignored visibility entries, refused
            devices, ...): warnings every measurement repeats.
        info: remarks for the probe (`wattlm devices`) only, said once at discovery.
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
    for i, why in _stuck_counters(devices, calls, probe_s, sleep or time.sleep).items():
        d = devices[i]
        d.mode = "power"  # it answered the power call in the probe
        notes.append(f"{d.name} (index {d.index}): {why}; its power is polled and integrated instead")
    remarks = unmeasured + notes
    poll_interval_s = min(poll_interval_s, MAX_POLL_INTERVAL_S)
    if not devices:
        calls.shutdown()
        return NullSource(name), Probe(name, False, "; ".join(remarks + list(info)) or f"no visible GPU for {name}")
    averaged = max((calls.power_average_s(d.handle) for d in devices if d.mode == "power"), default=0.0)
    source = GpuSource(
        name,
        devices,
        calls,
        poll_interval_s=poll_interval_s,
        counter_update_s=counter_update_s,
        power_average_s=averaged,
    )
    source.warnings = tuple(remarks)
    described = [
        f"{d.name} (index {d.index}): "
        + ("energy counter" if d.mode == "counter" else _power_words(calls, d, poll_interval_s))
        + (f", shared ({d.note})" if d.shared else "")
        for d in devices
    ]
    return source, Probe(name, True, "; ".join(described + remarks + list(info)))


def _power_words(calls: VendorCalls, d: GpuDevice, poll_interval_s: float) -> str:
    average_s = calls.power_average_s(d.handle)
    kind = f"its driver's {average_s:g} s average power" if average_s else "instant power"
    return f"{kind} polled every {poll_interval_s:g} s, integrated"


class GpuSource(EnergySource):
    def __init__(
        self,
        name: str,
        devices: list[GpuDevice],
        calls: VendorCalls,
        *,
        poll_interval_s: float,
        counter_update_s: float,
        power_average_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._devices = devices
        self._calls = calls
        self._clock = clock
        self._closed = False
        polls = any(d.mode == "power" for d in devices)
        self.max_read_interval_s = poll_interval_s if polls else None
        # An averaged power reading lags the load by its averaging time: a window shorter than that
        # is mostly the previous second's power.
        self.update_period_s = max(poll_interval_s, power_average_s) if polls else counter_update_s
        self._channels = tuple(
            Channel(
                key=f"{name}:{d.uuid}",
                domain="gpu",
                label=f"{d.name} (index {d.index})",
                source=name,
                provenance="counter" if d.mode == "counter" else "integrated",
                shared=d.shared,
                note=d.note,
                covers=d.covers if d.mode == "counter" else (),
            )
            for d in devices
        )

    def channels(self) -> tuple[Channel, ...]:
        return self._channels

    def open(self) -> None:
        if self._closed:
            raise SourceError(f"the {self.name} source is closed: make a new one (wattlm.energy.discover)")
        for d in self._devices:
            d.gaps, d.last_j = 0, 0.0
            if d.mode == "counter":
                d.prev_raw_j = self._calls.energy_j(d.handle)
            else:
                d.integrator = PowerIntegrator()
                d.integrator.add(self._clock(), self._calls.power_w(d.handle))

    def read(self) -> dict[str, Reading]:
        if self._closed:
            raise SourceError(f"the {self.name} source is closed and reads no more")
        out = {}
        for d, channel in zip(self._devices, self._channels):
            try:
                if d.mode == "counter":
                    raw = self._calls.energy_j(d.handle)
                    if raw < d.prev_raw_j:
                        # The counter went backwards: a GPU reset restarts it from zero (and some
                        # accumulators have been seen to step back). What happened in this interval is
                        # unknown: a gap, never a negative or absurd energy.
                        d.gaps += 1
                    else:
                        d.last_j += raw - d.prev_raw_j
                    d.prev_raw_j = raw
                else:
                    d.integrator.add(self._clock(), self._calls.power_w(d.handle))
                    d.last_j = d.integrator.energy_j
            except self._calls.errors:
                d.gaps += 1  # keep the last good value; the window reports the gap
            out[channel.key] = Reading(d.last_j, d.gaps)
        return out

    def close(self) -> None:
        """Release the library once; later calls do nothing (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._calls.shutdown()
        except self._calls.errors:
            pass  # the library is already shut down
