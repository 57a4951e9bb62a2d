import sys
import time

import pytest

from tests.fakes.nvml import FakeGpu, Ramp, make_fake_nvml
from wattlm.energy.meter import EnergyMeter
from wattlm.energy.sources import gpu
from wattlm.energy.sources.nvml import probe_nvml

UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444"


@pytest.fixture
def install(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

    def _install(gpus, **kwargs):
        mod = make_fake_nvml(gpus, **kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        return mod

    return _install


def test_energy_counter_is_used_when_supported(install, monkeypatch):
    counter = {"mj": 1_000_000.0}
    install([FakeGpu(UUID_A, energy_mj=lambda: counter["mj"], power_mw=lambda: 300_000.0)])
    # The counter probe waits; meanwhile a working counter advances at the power drawn (300 W).
    monkeypatch.setattr(gpu.time, "sleep", lambda s: counter.update(mj=counter["mj"] + 300_000.0 * s))
    source, probe = probe_nvml()
    assert probe.available and "energy counter" in probe.detail
    (channel,) = source.channels()
    assert channel.provenance == "counter" and channel.key == f"nvml:{UUID_A}"
    assert channel.label == "NVIDIA H100 80GB HBM3 (index 0)"
    source.open()
    counter["mj"] += 12_345.0
    assert source.read()[channel.key].energy_j == pytest.approx(12.345)


def test_without_counter_power_is_polled_and_integrated(install):
    ramp = Ramp(p0_w=100.0, slope_w_per_s=400.0)
    install([FakeGpu(UUID_A, energy_mj=None, power_mw=lambda: ramp.power_w(time.monotonic()) * 1000)])
    source, probe = probe_nvml(poll_interval_s=0.02)
    assert "integrated" in probe.detail
    assert source.max_read_interval_s == 0.02  # the meter must poll it at ≥ 10 Hz
    meter = EnergyMeter([source], interval_s=0.1)
    t_before_begin = time.monotonic()
    meter.begin_window("w")
    t_after_begin = time.monotonic()
    x = 0
    while time.monotonic() - t_after_begin < 0.6:
        x += 1  # keep busy; the sampler thread polls meanwhile
    t_before_end = time.monotonic()
    m = meter.end_window("w")
    t_after_end = time.monotonic()
    meter.close()
    assert m.devices[0].provenance == "integrated"
    assert m.samples >= 20
    # Trapezoids are exact for a linear ramp, so the result lies between the integrals over the
    # shortest and the longest interval the two edge reads can span.
    assert ramp.energy_j(t_after_begin, t_before_end) <= m.gpu_energy_j <= ramp.energy_j(t_before_begin, t_after_end)


def test_gpu_with_neither_counter_nor_power_is_not_reported_as_zero(install):
    install([FakeGpu(UUID_A, energy_mj=None, power_mw=None)])
    source, probe = probe_nvml()
    assert source.channels() == ()
    assert not probe.available and "neither" in probe.detail


def test_unmeasurable_gpu_beside_a_measurable_one_is_warned_about(install):
    install([FakeGpu(UUID_A, energy_mj=lambda: 0.0), FakeGpu(UUID_B, energy_mj=None, power_mw=None)])
    source, probe = probe_nvml()
    assert len(source.channels()) == 1
    assert any("neither" in w for w in source.warnings)


def test_cuda_visible_devices_by_uuid_prefix_and_index(install, monkeypatch):
    install([FakeGpu(UUID_A, energy_mj=lambda: 0.0), FakeGpu(UUID_B, energy_mj=lambda: 0.0)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")
    source, _ = probe_nvml()
    assert [c.key for c in source.channels()] == [f"nvml:{UUID_B}"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"1,{UUID_B},0")  # duplicates collapse by UUID
    source, _ = probe_nvml()
    assert [c.key for c in source.channels()] == [f"nvml:{UUID_B}", f"nvml:{UUID_A}"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,7,1")  # CUDA stops at the first invalid entry
    source, probe = probe_nvml()
    assert [c.key for c in source.channels()] == [f"nvml:{UUID_A}"]
    assert "'7' matches no GPU" in probe.detail
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    source, probe = probe_nvml()
    assert source.channels() == () and not probe.available


def test_mig_instances_report_parent_gpu_as_shared(install, monkeypatch):
    migs = ["MIG-11111111-aaaa", "MIG-22222222-bbbb"]
    install(
        [FakeGpu(UUID_A, energy_mj=lambda: 0.0, mig_enabled=True, migs=migs), FakeGpu(UUID_B, energy_mj=lambda: 0.0)]
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(migs))
    source, probe = probe_nvml()
    (channel,) = source.channels()  # two instances of one GPU: one device
    assert channel.key == f"nvml:{UUID_A}" and channel.shared
    assert "MIG" in channel.note and "shared" in probe.detail


def test_mig_mode_gpu_selected_by_index_is_shared(install):
    install([FakeGpu(UUID_A, energy_mj=lambda: 0.0, mig_enabled=True)])
    source, _ = probe_nvml()
    assert source.channels()[0].shared


def test_missing_driver_is_a_placeholder_with_reason(install):
    install([], init_error=True)
    source, probe = probe_nvml()
    assert source.channels() == () and "no NVIDIA driver" in probe.detail


def test_failed_read_counts_a_gap_and_keeps_last_value(install):
    state = {"mj": 0.0, "fail": False}

    def energy():
        if state["fail"]:
            raise sys.modules["pynvml"].NVMLError(15)  # GPU is lost
        return state["mj"]

    install([FakeGpu(UUID_A, energy_mj=energy)])
    source, _ = probe_nvml()
    source.open()
    state["mj"] = 5000.0
    assert source.read()[f"nvml:{UUID_A}"].energy_j == 5.0
    state["fail"] = True
    r = source.read()[f"nvml:{UUID_A}"]
    assert (r.energy_j, r.gaps) == (5.0, 1)


def test_power_polling_never_slower_than_10_hz(install):
    install([FakeGpu(UUID_A, energy_mj=None, power_mw=lambda: 1000.0)])
    source, probe = probe_nvml(poll_interval_s=1.0)
    assert source.max_read_interval_s == 0.1
    assert "every 0.1 s" in probe.detail
