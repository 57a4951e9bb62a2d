"""Energy read from exporters over HTTP: wattlm's own (`wattlm exporter`), NVIDIA's dcgm-exporter and
Kepler. A deployment that spans several machines is metered by scraping each machine's exporter at
the window edges (and once a second between them, so an exporter that stops answering is noticed).

The format is told from the metric names:

    wattlm        wattlm_energy_joules_total{uuid, domain, provenance, …}   J, provenance from the label
    dcgm-exporter DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{UUID, gpu, Hostname}  mJ since the driver loaded, counter
    Kepler ≥ 0.10 kepler_node_cpu_joules_total{zone="package"|"dram"}        J, RAPL counter
    Kepler < 0.10 kepler_node_{package,dram,gpu}_joules_total{mode}          J, idle + dynamic modes summed

A device is identified by its UUID (dcgm's and wattlm's GPUs) or by node and zone; listed twice
(the same node behind two addresses, two exporters on one machine) it is counted once, always from
the address that reported it first, because two exporters' counters start at different times.
A scrape that fails, a counter that goes backwards or an exporter that restarted (wattlm's start
time changes) leaves that interval out and counts a gap, so the window is `partial`, never a silent zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidInputError
from ...units import mj_to_j
from .base import PROVENANCE_RANK, Channel, EnergySource, Reading

SCRAPE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RemoteDevice:
    uuid: str
    domain: str  # gpu | cpu | dram
    label: str
    provenance: str
    energy_j: float


@dataclass(frozen=True)
class Scrape:
    kind: str  # "wattlm" | "dcgm" | "kepler"
    devices: dict[str, RemoteDevice]  # by uuid
    start_time_s: float | None  # wattlm's start-time gauge; None for the others


def parse_metrics(text: str, url: str) -> Scrape:
    """The energy devices in one Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except ValueError as e:
        raise InvalidInputError(f"{url} does not answer in the Prometheus text format ({e})") from e
    names = {_name(s) for s in samples}
    if "wattlm_energy_joules" in names:
        return _wattlm(samples)
    if "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" in names:
        return _dcgm(samples)
    if any(n.startswith("kepler_node_") and n.endswith("_joules") for n in names):
        return _kepler(samples, url)
    raise InvalidInputError(
        f"{url} exposes no energy counter wattlm knows (wattlm_energy_joules_total, dcgm-exporter's "
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, Kepler's kepler_node_*_joules_total); enable one there"
    )


def _name(sample: Any) -> str:
    """The metric's name without the `_total` that the parser adds to (or finds on) counters."""
    return str(sample.name).removesuffix("_total")


def _wattlm(samples: Sequence[Any]) -> Scrape:
    devices = {}
    start = None
    for s in samples:
        if s.name == "wattlm_exporter_start_time_seconds":
            start = float(s.value)
        if _name(s) != "wattlm_energy_joules":
            continue
        labels = s.labels
        provenance = labels.get("provenance", "estimated")
        if provenance not in PROVENANCE_RANK:
            provenance = "estimated"
        host = labels.get("host", "?")
        devices[labels["uuid"]] = RemoteDevice(
            labels["uuid"],
            labels.get("domain", "gpu"),
            f"{labels.get('label') or labels.get('device', '?')} on {host}",
            provenance,
            float(s.value),
        )
    return Scrape("wattlm", devices, start)


def _dcgm(samples: Sequence[Any]) -> Scrape:
    devices = {}
    for s in samples:
        if _name(s) != "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION":
            continue
        labels = s.labels
        uuid = labels.get("UUID") or f"{labels.get('Hostname', '?')}/gpu{labels.get('gpu', '?')}"
        name = labels.get("modelName", "GPU")
        label = f"{name} (gpu {labels.get('gpu', '?')}) on {labels.get('Hostname', '?')}"
        devices[uuid] = RemoteDevice(uuid, "gpu", label, "counter", mj_to_j(float(s.value)))
    return Scrape("dcgm", devices, None)


_KEPLER_ZONES = {"package": "cpu", "dram": "dram"}  # core and uncore lie inside package
_KEPLER_OLD = {"kepler_node_package_joules": "cpu", "kepler_node_dram_joules": "dram", "kepler_node_gpu_joules": "gpu"}


def _kepler(samples: Sequence[Any], url: str) -> Scrape:
    totals: dict[str, list[Any]] = {}
    for s in samples:
        labels = s.labels
        node = labels.get("node_name") or labels.get("instance") or url
        if _name(s) == "kepler_node_cpu_joules":
            domain = _KEPLER_ZONES.get(labels.get("zone", ""))
            where = f"{labels.get('zone')}-{labels.get('index', labels.get('path', '0'))}"
        elif _name(s) in _KEPLER_OLD:
            domain = _KEPLER_OLD[_name(s)]
            where = f"{domain}-{labels.get('package_id', labels.get('index', '0'))}"  # idle + dynamic modes add up
        else:
            continue
        if domain is None:
            continue
        # Kepler falls back to a power model where it cannot read RAPL; it says so in a source label.
        modelled = labels.get("source", "rapl") not in ("rapl", "intel_rapl", "rapl-sysfs", "nvml", "")
        uuid = f"kepler:{node}/{where}"
        entry = totals.setdefault(
            uuid, [domain, f"Kepler {where} on {node}", "estimated" if modelled else "counter", 0.0]
        )
        entry[3] += float(s.value)
    devices = {uuid: RemoteDevice(uuid, d, label, prov, j) for uuid, (d, label, prov, j) in totals.items()}
    return Scrape("kepler", devices, None)


Getter = Callable[[str, float], tuple[int, str]]  # (url, timeout_s) -> (status, text); raises OSError


def scrape(url: str, get: Getter) -> Scrape:
    """GET one exporter's metrics; raises InvalidInputError with what went wrong."""
    try:
        status, text = get(url, SCRAPE_TIMEOUT_S)
    except OSError as e:
        raise InvalidInputError(f"energy exporter {url} did not answer ({type(e).__name__}: {e})") from e
    if status != 200:
        raise InvalidInputError(f"energy exporter {url} answered HTTP {status}")
    return parse_metrics(text, url)


def metrics_url(url: str) -> str:
    """Accept host:port, http://host:port or a full …/metrics address."""
    url = url.strip()
    if not url:
        raise InvalidInputError("an empty energy exporter address: give URL[,URL...] such as http://node1:9464")
    if "://" not in url:
        url = "http://" + url
    if not url.split("://", 1)[1].partition("/")[2]:
        url = url.rstrip("/") + "/metrics"
    return url


class RemoteSource(EnergySource):
    """The devices one exporter reports, minus those already claimed by an earlier address."""

    def __init__(self, url: str, first: Scrape, uuids: Sequence[str], get: Getter) -> None:
        self.url, self._get = url, get
        self.name = f"{first.kind}-exporter"
        self.max_read_interval_s = 1.0  # a dead exporter is noticed within a second, not at the end
        self._uuids = tuple(uuids)
        self._channels = tuple(
            Channel(
                key=f"remote:{u}",
                domain=first.devices[u].domain,  # type: ignore[arg-type]
                label=first.devices[u].label,
                source=self.name,
                provenance=first.devices[u].provenance,  # type: ignore[arg-type]
                note=f"read from {url}",
            )
            for u in self._uuids
        )
        self._base: dict[str, float] = {}
        self._energy: dict[str, float] = {}
        self._gaps: dict[str, int] = {}
        self._start: float | None = None
        self.failures: list[str] = []  # why reads failed, for the measurement's reason

    def channels(self) -> tuple[Channel, ...]:
        return self._channels

    def open(self) -> None:
        self._energy = {u: 0.0 for u in self._uuids}
        self._gaps = {u: 0 for u in self._uuids}
        self._base = {}
        self._start = None
        self.failures = []
        self._absorb(self._try())

    def _try(self) -> Scrape | None:
        try:
            return scrape(self.url, self._get)
        except InvalidInputError as e:
            self.failures.append(str(e))
            return None

    def _absorb(self, got: Scrape | None) -> None:
        restarted = got is not None and self._start is not None and got.start_time_s != self._start
        if restarted:
            self.failures.append(f"energy exporter {self.url} restarted")
        for u in self._uuids:
            device = got.devices.get(u) if got is not None else None
            if device is None or not math.isfinite(device.energy_j):
                if u in self._base:
                    self._gaps[u] += 1
                continue
            if u in self._base:
                delta = device.energy_j - self._base[u]
                if delta < 0 or restarted:
                    self._gaps[u] += 1  # the interval since the last read is lost
                else:
                    self._energy[u] += delta
            self._base[u] = device.energy_j
        if got is not None:
            self._start = got.start_time_s

    def read(self) -> dict[str, Reading]:
        self._absorb(self._try())
        return {f"remote:{u}": Reading(self._energy[u], self._gaps[u]) for u in self._uuids}


def remote_sources(urls: Sequence[str], get: Getter | None = None) -> tuple[RemoteSource, ...]:
    """Probe every exporter (each must answer now) and give each device to the first that lists it."""
    from ...httpget import get as http_get

    get = get or http_get
    claimed: set[str] = set()
    sources = []
    for raw in urls:
        url = metrics_url(raw)
        first = scrape(url, get)
        if not first.devices:
            raise InvalidInputError(f"energy exporter {url} reports no device; check it on that machine")
        mine = [u for u in first.devices if u not in claimed]
        claimed.update(mine)
        if mine:
            sources.append(RemoteSource(url, first, mine, get))
    return tuple(sources)
