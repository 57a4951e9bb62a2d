"""`wattlm exporter` and reading exporters back (wattlm, dcgm-exporter, Kepler formats)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.fakes.sources import ScriptedSource
from wattlm.energy.exporter import EnergyCollector, device_labels
from wattlm.energy.meter import EnergyMeter
from wattlm.energy.sources.remote import metrics_url, parse_metrics, remote_sources
from wattlm.errors import InvalidInputError


def _text(collector: EnergyCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_collector_exports_counters_that_never_go_backwards():
    gpu = ScriptedSource("nvml:GPU-1234", "gpu")
    cpu = ScriptedSource("estimate:cpu", "cpu", provenance="estimated")
    collector = EnergyCollector([gpu, cpu], host="node1")
    gpu.advance(5.0)
    text = _text(collector)
    assert 'wattlm_energy_joules_total{device="gpu0",domain="gpu"' in text
    scrape = parse_metrics(text, "u")
    assert scrape.kind == "wattlm" and scrape.devices["GPU-1234"].energy_j == 5.0
    assert scrape.devices["GPU-1234"].provenance == "counter"
    cpu_uuid = next(u for u in scrape.devices if u.endswith("/estimate:cpu"))
    assert scrape.devices[cpu_uuid].provenance == "estimated" and scrape.devices[cpu_uuid].domain == "cpu"
    assert scrape.start_time_s == collector.start_time_s
    gpu.energy_j = 2.0  # a source that went backwards: the exported value holds
    assert parse_metrics(_text(collector), "u").devices["GPU-1234"].energy_j == 5.0
    assert 'wattlm_exporter_info{host="node1",sources="fake,fake",version=' in text
    collector.close()


def test_device_labels_index_per_domain():
    channels = [ScriptedSource(k, d).channels()[0] for k, d in (("nvml:GPU-a", "gpu"), ("rapl:0", "cpu"))]
    channels.append(ScriptedSource("nvml:GPU-b", "gpu").channels()[0])
    labels = device_labels(channels, "m1")
    assert labels == {"nvml:GPU-a": ("gpu0", "GPU-a"), "rapl:0": ("cpu0", "m1/rapl:0"), "nvml:GPU-b": ("gpu1", "GPU-b")}


DCGM = """# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot (in mJ).
# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="GPU-aa",modelName="NVIDIA H100",Hostname="n1"} 123456789
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="1",UUID="GPU-bb",modelName="NVIDIA H100",Hostname="n1"} 1000
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-aa"} 300.5
"""

KEPLER_NEW = """# TYPE kepler_node_cpu_joules_total counter
kepler_node_cpu_joules_total{zone="package",path="/sys/class/powercap/intel-rapl:0",node_name="n2"} 5000.5
kepler_node_cpu_joules_total{zone="core",path="/sys/class/powercap/intel-rapl:0:0",node_name="n2"} 4000
kepler_node_cpu_joules_total{zone="dram",path="/sys/class/powercap/intel-rapl:0:1",node_name="n2"} 700
"""

KEPLER_OLD = """# TYPE kepler_node_package_joules_total counter
kepler_node_package_joules_total{instance="n3",mode="dynamic",package_id="0",source="rapl"} 30
kepler_node_package_joules_total{instance="n3",mode="idle",package_id="0",source="rapl"} 70
kepler_node_dram_joules_total{instance="n3",mode="dynamic",package_id="0",source="estimator"} 5
"""


def test_dcgm_and_kepler_formats():
    dcgm = parse_metrics(DCGM, "u")
    assert dcgm.kind == "dcgm" and dcgm.devices["GPU-aa"].energy_j == pytest.approx(123456.789)
    assert dcgm.devices["GPU-bb"].label.startswith("NVIDIA H100 (gpu 1) on n1")
    new = parse_metrics(KEPLER_NEW, "u")
    assert new.kind == "kepler"
    assert sorted((d.domain, d.energy_j) for d in new.devices.values()) == [("cpu", 5000.5), ("dram", 700.0)]
    old = parse_metrics(KEPLER_OLD, "u")
    by_domain = {d.domain: d for d in old.devices.values()}
    assert by_domain["cpu"].energy_j == 100.0 and by_domain["cpu"].provenance == "counter"  # idle + dynamic
    assert by_domain["dram"].provenance == "estimated"  # Kepler's model, said in its source label
    with pytest.raises(InvalidInputError, match="no energy counter wattlm knows"):
        parse_metrics("up 1\n", "http://x/metrics")


def test_metrics_url_forms():
    assert metrics_url("n1:9464") == "http://n1:9464/metrics"
    assert metrics_url("http://n1:9400/") == "http://n1:9400/metrics"
    assert metrics_url("http://n1:9400/custom") == "http://n1:9400/custom"


def FakeClient(pages):
    """A getter answering each URL with the text its function gives; None is a dead exporter."""

    def get(url, timeout_s):
        page = pages[url]()
        if page is None:
            raise ConnectionRefusedError(111, "Connection refused")
        return 200, page

    return get


def _wattlm_page(values, start=1.0):
    lines = [f"wattlm_exporter_start_time_seconds {start}"]
    for uuid, j in values.items():
        lines.append(f'wattlm_energy_joules_total{{uuid="{uuid}",domain="gpu",provenance="counter",host="h"}} {j}')
    return "\n".join(lines) + "\n"


def test_devices_listed_twice_are_counted_once_from_the_first_address():
    state = {"a": 0.0, "b": 0.0, "shared_a": 0.0, "shared_b": 500.0}
    pages = {
        "http://a/metrics": lambda: _wattlm_page({"GPU-a": state["a"], "GPU-s": state["shared_a"]}),
        "http://b/metrics": lambda: _wattlm_page({"GPU-b": state["b"], "GPU-s": state["shared_b"]}),
    }
    sources = remote_sources(["a", "b"], FakeClient(pages))
    assert [[c.key for c in s.channels()] for s in sources] == [["remote:GPU-a", "remote:GPU-s"], ["remote:GPU-b"]]
    with EnergyMeter(sources, interval_s=10.0) as meter:
        meter.begin_window("w")
        for key in ("a", "b", "shared_a"):
            state[key] += 10.0
        state["shared_b"] += 999.0  # the other exporter's counter of the shared GPU is never used
        m = meter.end_window("w")
    assert m.status == "ok" and m.gpu_energy_j == pytest.approx(30.0) and m.provenance == "counter"


def test_an_exporter_that_stops_answering_or_restarts_makes_the_window_partial():
    state = {"j": 0.0, "up": True, "start": 1.0}
    page = lambda: _wattlm_page({"GPU-a": state["j"]}, state["start"]) if state["up"] else None  # noqa: E731
    (source,) = remote_sources(["http://a:1/metrics"], FakeClient({"http://a:1/metrics": page}))
    with EnergyMeter([source], interval_s=10.0) as meter:
        meter.begin_window("w")
        state["j"] = 5.0
        state["up"] = False
        m = meter.end_window("w")
    assert m.status == "partial" and "1 interval(s) left out" in m.reason and m.gpu_energy_j == 0.0
    assert any("did not answer" in f for f in source.failures)
    state.update(up=True, j=50.0)
    with EnergyMeter([source], interval_s=10.0) as meter:
        meter.begin_window("w")
        state.update(j=3.0, start=2.0)  # restarted: counting again from zero
        m = meter.end_window("w")
    assert m.status == "partial" and any("restarted" in f for f in source.failures)


def test_remote_sources_refuse_dead_or_empty_exporters():
    with pytest.raises(InvalidInputError, match="did not answer"):
        remote_sources(["http://a/metrics"], FakeClient({"http://a/metrics": lambda: None}))
    with pytest.raises(InvalidInputError, match="no energy counter"):
        remote_sources(["http://a/metrics"], FakeClient({"http://a/metrics": lambda: "up 1\n"}))
