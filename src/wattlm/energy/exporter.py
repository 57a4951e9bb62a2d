"""`wattlm exporter`: this machine's cumulative energy counters in the Prometheus text format.

    wattlm_energy_joules_total{device="gpu0",uuid="GPU-…",domain="gpu",provenance="counter",…}
    wattlm_power_watts{…}                  average power between the last two sampler reads
    wattlm_exporter_info{host=…,sources=…,version=…} 1
    wattlm_exporter_start_time_seconds     when the counters started at zero (a restart changes it)

Counter sources are read at scrape time, so a scrape marks an exact window edge; sources that
integrate power or estimate it also need reads between scrapes, which a sampler thread provides
(the same sources and the same wrap handling as `EnergyMeter`). A value never goes backwards:
each device's exported energy is the largest it has reported since the start.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .sources.base import Channel, EnergySource, Reading, read_period_s

ENERGY_METRIC = "wattlm_energy_joules"
START_METRIC = "wattlm_exporter_start_time_seconds"
POWER_METRIC = "wattlm_power_watts"
INFO_METRIC = "wattlm_exporter"


def machine_id(path: str = "/etc/machine-id") -> str:
    """A stable identity of this machine for devices without their own UUID (CPU packages, DRAM),
    so the same machine scraped through two addresses is counted once."""
    try:
        with open(path, encoding="ascii") as f:
            value = f.read().strip()
    except OSError:
        value = ""
    return value or socket.gethostname()


def device_labels(channels: Sequence[Channel], machine: str) -> dict[str, tuple[str, str]]:
    """(device, uuid) per channel key: device is the domain and its index on this machine ("gpu0",
    "cpu1"); uuid is the GPU's own UUID, or machine id + channel key for the others."""
    seen: dict[str, int] = {}
    out = {}
    for c in channels:
        index = seen.get(c.domain, 0)
        seen[c.domain] = index + 1
        own = c.key.split(":", 1)[1] if c.domain == "gpu" and ":" in c.key else ""
        out[c.key] = (f"{c.domain}{index}", own or f"{machine}/{c.key}")
    return out


class EnergyCollector:
    """A prometheus-client collector over energy sources (reads them on each scrape)."""

    def __init__(self, sources: Sequence[EnergySource], *, interval_s: float = 0.5, host: str | None = None) -> None:
        from .. import __version__

        self.sources = tuple(s for s in sources if s.channels())
        self.channels = {c.key: c for s in self.sources for c in s.channels()}
        self.host = host or socket.gethostname()
        self.labels = device_labels(list(self.channels.values()), machine_id())
        self.version = __version__
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._energy_j: dict[str, float] = {}
        self._gaps: dict[str, int] = {}
        self._power_w: dict[str, float] = {}
        self._last: tuple[float, dict[str, float]] | None = None
        for source in self.sources:
            source.open()
        self.start_time_s = time.time()
        self._read()
        self._stop = threading.Event()
        needs_sampler = any(s.max_read_interval_s for s in self.sources)
        self._thread = threading.Thread(target=self._sample, name="wattlm-exporter", daemon=True)
        if needs_sampler:
            self._thread.start()

    def _read(self) -> None:
        with self._lock:
            readings: dict[str, Reading] = {}
            for source in self.sources:
                readings.update(source.read())
            now = time.monotonic()
            for key, r in readings.items():
                self._energy_j[key] = max(self._energy_j.get(key, 0.0), r.energy_j)  # never backwards
                self._gaps[key] = r.gaps
            # Power over a sliver shorter than half the interval would be counter noise: wait for more.
            if self._last is None or now - self._last[0] >= 0.5 * self.interval_s:
                if self._last is not None:
                    t, energy = self._last
                    self._power_w = {k: (j - energy.get(k, 0.0)) / (now - t) for k, j in self._energy_j.items()}
                self._last = (now, dict(self._energy_j))

    def _sample(self) -> None:
        period = read_period_s(self.sources, self.interval_s)
        while not self._stop.wait(period):
            self._read()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        self._read()  # the scrape is the window edge
        names = ["device", "uuid", "domain", "provenance", "source", "label", "host"]
        energy = CounterMetricFamily(
            ENERGY_METRIC, "Energy used since the exporter started, per device and domain", labels=names, unit=""
        )
        power = GaugeMetricFamily(POWER_METRIC, "Average power between the last two reads", labels=names)
        gaps = CounterMetricFamily(
            "wattlm_energy_gaps",
            "Read intervals left out of the energy (unreadable, counter went backwards)",
            labels=names,
        )
        with self._lock:
            for key, c in self.channels.items():
                device, uuid = self.labels[key]
                values = [device, uuid, c.domain, c.provenance, c.source, c.label, self.host]
                energy.add_metric(values, self._energy_j.get(key, 0.0))
                gaps.add_metric(values, float(self._gaps.get(key, 0)))
                if key in self._power_w:
                    power.add_metric(values, self._power_w[key])
        yield energy
        yield power
        yield gaps
        yield GaugeMetricFamily(
            START_METRIC, "When the exported counters started at zero (Unix time)", self.start_time_s
        )
        yield InfoMetricFamily(
            INFO_METRIC,
            "The wattlm exporter: host, energy sources, version",
            value={
                "host": self.host,
                "sources": ",".join(s.name for s in self.sources),
                "version": self.version,
            },
        )

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for source in self.sources:
            source.close()


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or bool(re.fullmatch(r"127(\.\d{1,3}){3}", host))


def serve(collector: EnergyCollector, host: str, port: int) -> tuple[Any, threading.Thread]:
    """Serve /metrics on host:port in a thread; returns (server, thread) — `server.shutdown()` stops it."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return start_http_server(port, addr=host, registry=registry)
