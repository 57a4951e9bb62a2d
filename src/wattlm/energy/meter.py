"""EnergyMeter: named, nestable measurement windows over every energy source on the machine.

Each window subtracts the cumulative readings taken at its two edges. While any window is open, a
background thread reads all sources every `interval_s` (and more often where a source needs it, e.g.
RAPL before its counter can wrap twice); those reads give integrated power, peak power and the
sample count. No thread exists before the first window opens.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ..errors import InvalidInputError, MeterError
from ..procstat import CpuTimes
from ..procstat import read as read_cpu_times
from .facility import Facility
from .measurement import DeviceEnergy, IdleSplit, Measurement, Work
from .sources.base import EnergySource, Reading, read_period_s, worst_provenance

_SHORT_WINDOW_FACTOR = 10  # warn when a window is shorter than this many counter updates
STEAL_WARNING = 0.05  # warn when a hypervisor took more than this share of the CPU time


def _iso(wall_s: float) -> str:
    return datetime.fromtimestamp(wall_s, tz=UTC).isoformat(timespec="milliseconds")


def _sync_cuda() -> str:
    """Wait for queued GPU work so it lands inside the window that launched it: on every device
    torch has a context on (`device_map="auto"` and pipeline parallelism queue work on several),
    not only the current one. torch is only used if the program already imported it and
    initialised CUDA; wattlm never imports it. Returns "" or why synchronising failed (a sticky
    CUDA error, a window edge during graph capture): the window then ends as partial."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return ""
    has_context = getattr(torch._C, "_cuda_hasPrimaryContext", None)  # never creates a context
    try:
        for index in range(torch.cuda.device_count()):
            if has_context is None or has_context(index):
                torch.cuda.synchronize(index)
    except RuntimeError as e:  # what torch raises for CUDA errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"CUDA synchronisation failed at a window edge ({first}): GPU work may cross it"
    return ""


@dataclass
class _Window:
    name: str
    start_s: float
    start_wall_s: float
    start: dict[str, Reading]
    samples: int = 1
    peak_power_w: float | None = None
    sync_error: str = ""  # why CUDA could not be synchronised at the window's start
    cpu_s: float = 0.0  # this process's CPU time at the start
    stat: CpuTimes | None = None  # the machine's CPU times at the start


class EnergyMeter:
    """Measures energy in named windows.

    Args:
        sources: energy sources to read; by default every source `discover()` finds.
        interval_s: sampling interval of the background thread (default 0.1 s = 10 Hz).
        facility: PUE or cooling model, carbon intensity and price; default IT only, world-average
            carbon, stated as such in each measurement.
        idle_power_w: idle IT power to split energy into static and dynamic parts (see
            `measure_idle`).
    """

    def __init__(
        self,
        sources: Sequence[EnergySource] | None = None,
        *,
        interval_s: float = 0.1,
        facility: Facility | None = None,
        idle_power_w: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_times: Callable[[], CpuTimes | None] = read_cpu_times,
    ) -> None:
        if not interval_s > 0:
            raise InvalidInputError(f"sampling interval must be > 0 s, got {interval_s}")
        if sources is None:
            from .discover import discover

            sources = discover(interval_s=interval_s).sources
        self.sources = tuple(sources)
        self.channels = {c.key: c for s in self.sources for c in s.channels()}
        self.facility = facility or Facility()
        self.idle_power_w = idle_power_w
        self.interval_s = interval_s
        self._clock = clock
        self._cpu_times = cpu_times
        self._sample_s = read_period_s(self.sources, interval_s)
        self._update_period_s = max((s.update_period_s for s in self.sources if s.channels()), default=0.0)
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._opened = False
        self._last: tuple[float, float] | None = None  # (time_s, total energy_j) of the last read
        self.power_w: float | None = None  # IT power between the last two reads, for live views
        self._sampler_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listeners: list[Callable[[float, dict[str, Reading]], None]] = []

    def listen(self, fn: Callable[[float, dict[str, Reading]], None]) -> None:
        """Call `fn(time_s, readings)` at every read from now on (window edges and the sampler's
        ticks), under the meter's lock: for code that keeps the energy as a time series. It must be quick."""
        with self._lock:
            self._listeners.append(fn)

    def unlisten(self, fn: Callable[[float, dict[str, Reading]], None]) -> None:
        with self._lock:
            self._listeners = [f for f in self._listeners if f is not fn]

    # -- windows ---------------------------------------------------------------------------------

    def begin_window(self, name: str) -> None:
        """Open a window. Names are unique among open windows; windows may nest or overlap."""
        sync_error = _sync_cuda()
        with self._lock:
            if name in self._windows:
                raise MeterError(f"window {name!r} is already open: end it first or use another name")
            if not self._opened:
                for source in self.sources:
                    source.open()
                self._opened = True
            now, readings = self._read_all()
            self._windows[name] = _Window(
                name,
                now,
                time.time(),
                readings,
                sync_error=sync_error,
                cpu_s=time.process_time(),
                stat=self._cpu_times(),
            )
        self._ensure_sampler()

    def end_window(self, name: str, *, status: str | None = None, reason: str = "") -> Measurement:
        """Close a window and return its measurement.

        Args:
            status: force `partial` (e.g. the measured program crashed); the reason says why.
        """
        sync_error = _sync_cuda()  # the window ends whatever happens here
        with self._lock:
            if name not in self._windows:
                raise MeterError(f"no open window named {name!r}: open it with begin_window({name!r})")
            now, readings = self._read_all()
            window = self._windows.pop(name)
            cpu_s, stat = time.process_time(), self._cpu_times()
        self._stop_sampler_if_idle()
        sync_errors = [e for e in dict.fromkeys((window.sync_error, sync_error)) if e]
        if sync_errors:
            status, reason = "partial", "; ".join([reason, *sync_errors] if reason else sync_errors)
        steal = None
        if window.stat is not None and stat is not None and stat.total_s > window.stat.total_s:
            steal = (stat.steal_s - window.stat.steal_s) / (stat.total_s - window.stat.total_s)
        m = self._measurement(window, now, readings, status, reason)
        warnings = m.warnings
        if steal is not None and steal > STEAL_WARNING:
            warnings += (
                f"window {name!r}: the hypervisor took {100 * steal:.0f} % of this machine's CPU time (steal):"
                " speed and energy figures from it are unreliable; measure again when the host is quieter",
            )
        return replace(m, process_cpu_s=cpu_s - window.cpu_s, steal_fraction=steal, warnings=warnings)

    def window(self, name: str, on_result: Callable[[Measurement], None] | None = None) -> MeasureWindow:
        """A context manager / decorator around begin_window and end_window."""
        return MeasureWindow(self, name, on_result)

    def read_it_j(self) -> tuple[float, float]:
        """(time_s, IT energy in J since the sources were opened), read now. For code that splits one
        long window's energy itself (the serving loop charges it to requests); a window must be open."""
        with self._lock:
            if not self._windows:
                raise MeterError("read_it_j needs an open window: call begin_window first")
            now, readings = self._read_all()
        return now, sum(r.energy_j for r in readings.values())

    @property
    def provenance(self) -> str:
        """The least trustworthy provenance among the meter's channels."""
        return worst_provenance(c.provenance for c in self.channels.values())

    def measure_idle(self, duration_s: float = 5.0) -> float:
        """Measure idle IT power over `duration_s` of doing nothing, and use it as the baseline that
        splits later measurements into static and dynamic energy. Returns the idle power in W."""
        if not duration_s > 0:
            raise InvalidInputError(f"idle duration must be > 0 s, got {duration_s}")
        name = "wattlm:idle-baseline"
        self.begin_window(name)
        time.sleep(duration_s)  # the point is to measure the machine while this process idles
        m = self.end_window(name)
        self.idle_power_w = m.avg_power_w
        return self.idle_power_w

    def close(self) -> None:
        with self._lock:
            self._windows.clear()
        self._stop_sampler_if_idle()
        for source in self.sources:
            source.close()

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sampling --------------------------------------------------------------------------------

    def _read_all(self) -> tuple[float, dict[str, Reading]]:
        """Read every source (caller holds the lock) and update the open windows' power figures."""
        readings: dict[str, Reading] = {}
        for source in self.sources:
            readings.update(source.read())
        now = self._clock()
        total_j = sum(r.energy_j for r in readings.values())
        if self._last is not None:
            dt = now - self._last[0]
            # Power over a sliver between a sampler tick and a window edge is counter noise.
            if dt >= 0.5 * self._sample_s:
                power_w = (total_j - self._last[1]) / dt
                self.power_w = power_w
                for w in self._windows.values():
                    w.peak_power_w = power_w if w.peak_power_w is None else max(w.peak_power_w, power_w)
        for w in self._windows.values():
            w.samples += 1
        self._last = (now, total_j)
        for fn in self._listeners:
            fn(now, readings)
        return now, readings

    def _sample_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self._sample_s):
            with self._lock:
                if self._windows:
                    self._read_all()

    # The sampler runs only while a window is open. Starting and stopping it happen under their own
    # lock, and a stop re-checks for open windows, so a window opened by another thread meanwhile
    # never ends up without a sampler.
    def _ensure_sampler(self) -> None:
        with self._sampler_lock:
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._sample_loop, args=(self._stop,), name="wattlm-sampler", daemon=True
                )
                self._thread.start()

    def _stop_sampler_if_idle(self) -> None:
        with self._sampler_lock:
            with self._lock:
                if self._windows or self._thread is None:
                    return
            self._stop.set()
            self._thread.join()
            self._thread = None

    # -- results ---------------------------------------------------------------------------------

    def _measurement(
        self, w: _Window, end_s: float, end: dict[str, Reading], status: str | None, reason: str
    ) -> Measurement:
        duration_s = max(0.0, end_s - w.start_s)
        devices = []
        for key, channel in self.channels.items():
            devices.append(
                DeviceEnergy(
                    key=key,
                    domain=channel.domain,
                    label=channel.label,
                    source=channel.source,
                    provenance=channel.provenance,
                    energy_j=end[key].energy_j - w.start[key].energy_j,
                    shared=channel.shared,
                    gaps=end[key].gaps - w.start[key].gaps,
                    note=channel.note,
                )
            )

        def total(domain: str) -> float | None:
            parts = [d.energy_j for d in devices if d.domain == domain]
            return sum(parts) if parts else None

        it_j = sum(d.energy_j for d in devices)
        reasons = [reason] if reason else []
        gappy = [
            f"{d.label}: {d.gaps} interval(s) left out (unreadable, or the counter went backwards)"
            for d in devices
            if d.gaps
        ]
        reasons += gappy
        if not devices:
            final_status, reasons = "failed", ["no energy source is available (see `wattlm devices`)"] + reasons
        elif status == "partial" or gappy:
            final_status = "partial"
        else:
            final_status = status or "ok"
        warnings = [msg for s in self.sources for msg in s.warnings]
        if devices and duration_s < _SHORT_WINDOW_FACTOR * self._update_period_s:
            warnings.append(
                f"window {w.name!r} lasted {duration_s:.3g} s, under {_SHORT_WINDOW_FACTOR}× the counters' "
                f"update period ({self._update_period_s:g} s): its energy is dominated by counter granularity"
            )
        carbon = self.facility.carbon
        if carbon is not None and carbon.defaulted:
            warnings.append(
                f"no region given: CO2e uses the {carbon.region} average ({carbon.g_per_kwh:g} g/kWh, "
                f"{carbon.year}); pass a region or an intensity"
            )
        idle = None
        if self.idle_power_w is not None:
            static_j = min(it_j, self.idle_power_w * duration_s)
            idle = IdleSplit(self.idle_power_w, static_j, it_j - static_j)
        return Measurement(
            name=w.name,
            status=final_status,
            reason="; ".join(reasons),
            start_time=_iso(w.start_wall_s),
            end_time=_iso(w.start_wall_s + duration_s),
            duration_s=duration_s,
            devices=tuple(devices),
            gpu_energy_j=total("gpu"),
            cpu_energy_j=total("cpu"),
            dram_energy_j=total("dram"),
            it_energy_j=it_j,
            provenance=worst_provenance(d.provenance for d in devices),
            avg_power_w=it_j / duration_s if duration_s > 0 else 0.0,
            peak_power_w=w.peak_power_w,
            samples=w.samples,
            facility=self.facility.apply(it_j),
            idle=idle,
            warnings=tuple(warnings),
        )


class MeasureWindow(contextlib.ContextDecorator):
    """`with meter.window("prefill") as m: ...; m.add_work(tokens=n)`; then `m.result`.

    Also a decorator: each call of the function is one window, handed to `on_result`.
    """

    def __init__(self, meter: EnergyMeter, name: str, on_result: Callable[[Measurement], None] | None = None):
        self.meter, self.name, self.on_result = meter, name, on_result
        self.result: Measurement | None = None
        self._work = Work()

    def add_work(self, tokens: int | None = None, flops: float | None = None) -> None:
        """Add work done inside the window; several calls add up."""
        add = lambda a, b: b if a is None else (a if b is None else a + b)  # noqa: E731
        self._work = Work(tokens=add(self._work.tokens, tokens), flops=add(self._work.flops, flops))

    def __enter__(self) -> MeasureWindow:
        self._work = Work()
        self.meter.begin_window(self.name)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        status, reason = (None, "") if exc_type is None else ("partial", f"window ended by {exc_type.__name__}: {exc}")
        self.result = replace(self.meter.end_window(self.name, status=status, reason=reason), work=self._work)
        if self.on_result is not None:
            self.on_result(self.result)
