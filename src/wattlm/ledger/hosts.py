"""Each host's energy as a time series on the wall clock (spans carry wall-clock times), read by the
meter's sampler, kept for as long as a span may still arrive for it (a bounded buffer).

Without exporters the host is this machine (every span is charged to its meter); with
`--energy-from` each exporter is one host, and a span finds its host by `--host-map NAME=EXPORTER`,
else by an exporter whose address names the span's host, else — when there is only one — that one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..attribution.series import EnergySeries
from ..energy.meter import EnergyMeter
from ..energy.sources.base import EnergySource, Reading
from ..errors import InvalidInputError, MeterError

LOCAL = "local"


@dataclass
class Host:
    name: str
    meter: EnergyMeter
    series: EnergySeries = field(default_factory=EnergySeries)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, now: float, readings: dict[str, Reading]) -> None:
        with self.lock:
            self.series.add(now, sum(r.energy_j for r in readings.values()), sum(r.gaps for r in readings.values()))

    @property
    def provenance(self) -> str:
        return self.meter.provenance


class Hosts:
    def __init__(
        self, groups: Sequence[tuple[str, Sequence[EnergySource] | None]], host_map: dict[str, str], interval_s: float
    ):
        self.hosts: dict[str, Host] = {}
        for name, sources in groups:
            meter = EnergyMeter(sources, interval_s=interval_s, clock=time.time)
            host = Host(name, meter)
            meter.listen(host.keep)
            self.hosts[name] = host
        unknown = sorted(set(host_map.values()) - set(self.hosts))
        if unknown:
            raise InvalidInputError(
                f"--host-map names {', '.join(unknown)}, which is not among the energy hosts ({', '.join(self.hosts)})"
            )
        self.host_map = host_map

    def start(self) -> None:
        for h in self.hosts.values():
            h.meter.begin_window("wattlm:ledger")

    def close(self) -> None:
        for h in self.hosts.values():
            try:
                h.meter.end_window("wattlm:ledger")
            except MeterError:  # never opened (a failed start): nothing to end
                pass
            h.meter.close()

    def of(self, span_host: str) -> Host | None:
        """The energy host a span's host is charged to, or None."""
        if LOCAL in self.hosts:
            return self.hosts[LOCAL]
        if span_host in self.host_map:
            return self.hosts[self.host_map[span_host]]
        if span_host in self.hosts:
            return self.hosts[span_host]
        by_name = [h for name, h in self.hosts.items() if urlsplit(f"//{name}").hostname == span_host]
        if len(by_name) == 1:
            return by_name[0]
        if len(self.hosts) == 1:
            return next(iter(self.hosts.values()))
        return None


def host_key(url: str) -> str:
    """An exporter's address as a host name: host:port."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.netloc


def build(energy_from: Sequence[str], host_map: dict[str, str], interval_s: float) -> Hosts:
    if not energy_from:
        return Hosts([(LOCAL, None)], {}, interval_s)
    from ..energy.sources.remote import metrics_url, remote_sources

    # A device listed by two exporters (the same machine behind two addresses) is counted once,
    # for the first host that lists it, as `wattlm load --energy-from` does.
    sources = remote_sources(energy_from)
    by_url = {s.url: s for s in sources}
    groups = []
    for url in energy_from:
        full = metrics_url(url)
        if full not in by_url:
            raise InvalidInputError(
                f"energy exporter {url} reports only devices an earlier exporter already reports: list each host once"
            )
        groups.append((host_key(full), [by_url[full]]))
    return Hosts(groups, {k: host_key(v) for k, v in host_map.items()}, max(interval_s, 1.0))
