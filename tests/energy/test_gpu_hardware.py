"""The GPU meter against fakes that misbehave like real hardware: counters that restart, devices
that refuse their handle, libraries whose shutdown is not reference-counted, CUDA work on several
devices at a window edge."""

import sys
import types

import pytest

from tests.fakes.amdsmi import FakeAmdGpu, make_fake_amdsmi
from tests.fakes.nvml import FakeGpu, make_fake_nvml
from wattlm.energy.meter import EnergyMeter
from wattlm.energy.sources import gpu
from wattlm.energy.sources.amdsmi import probe_amdsmi
from wattlm.energy.sources.nvml import probe_nvml
from wattlm.errors import SourceError

UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444"


@pytest.fixture
def nvml(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

    def install(gpus):
        mod = make_fake_nvml(gpus)
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        return mod

    return install


def _working_counter(monkeypatch, counter, watts):
    """While the counter probe waits, a working counter advances at the power drawn."""
    monkeypatch.setattr(gpu.time, "sleep", lambda s: counter.update(mj=counter["mj"] + watts * 1000 * s))


def test_a_counter_that_restarts_mid_window_is_a_gap_not_a_negative_energy(nvml, monkeypatch):
    counter = {"mj": 5_000_000.0}  # 5 MJ since the driver loaded
    nvml([FakeGpu(UUID_A, energy_mj=lambda: counter["mj"], power_mw=lambda: 300_000.0)])
    _working_counter(monkeypatch, counter, 300.0)
    source, _ = probe_nvml()
    meter = EnergyMeter([source])
    meter.begin_window("w")
    counter["mj"] += 1_000.0  # 1 J
    source.read()  # the sampler sees it
    counter["mj"] = 400.0  # a GPU reset restarts the counter
    source.read()
    counter["mj"] += 600.0  # 0.6 J after the reset
    m = meter.end_window("w")
    meter.close()
    (gpu,) = m.devices
    assert gpu.energy_j == pytest.approx(1.6) and gpu.gaps == 1  # was −4,999,599 J, status ok
    assert m.status == "partial" and "counter went backwards" in m.reason


def test_a_gpu_that_refuses_its_handle_is_skipped_and_the_others_are_measured(nvml):
    nvml(
        [
            FakeGpu(UUID_A, energy_mj=lambda: 1.0, power_mw=lambda: 1.0, refuse_handle=True),
            FakeGpu(UUID_B, energy_mj=lambda: 1.0, power_mw=lambda: 1.0, name_error=True),
        ]
    )
    source, probe = probe_nvml()
    (channel,) = source.channels()
    assert channel.key == f"nvml:{UUID_B}" and channel.label == "NVIDIA GPU (index 1)"  # GetName failed
    assert probe.available and "GPU index 0 refused by NVML" in probe.detail
    assert any("GPU index 0 refused" in w for w in source.warnings)
    source.close()


def test_closing_twice_releases_once_and_nvml_shuts_down_with_its_last_user(nvml):
    mod = nvml([FakeGpu(UUID_A, energy_mj=lambda: 1.0, power_mw=lambda: 1.0)])
    first, _ = probe_nvml()
    second, _ = probe_nvml()
    assert mod.state["init"] == 1  # one hold on the library for wattlm, however many sources
    first.close()
    first.close()  # idempotent: the fake's nvmlShutdown raises when called more often than nvmlInit
    assert mod.state["shutdown"] == 0 and second.read()  # the other source still reads
    second.close()
    assert mod.state["shutdown"] == 1
    with pytest.raises(SourceError, match="closed"):
        first.read()


def test_one_amdsmi_user_closing_does_not_invalidate_the_others(monkeypatch):
    for var in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    ticks = {"n": 1000}
    mod = make_fake_amdsmi([FakeAmdGpu("amd-0", ticks=lambda: ticks["n"], resolution_uj=1e6)])
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    first, _ = probe_amdsmi()
    second, _ = probe_amdsmi()
    second.open()
    first.close()
    ticks["n"] += 5
    (reading,) = second.read().values()
    assert reading.energy_j == pytest.approx(5.0) and reading.gaps == 0  # was: every handle invalid
    second.close()
    assert mod.state == {"up": False, "init": 1, "shutdown": 1}


class _FakeCuda:
    """What the meter asks of torch.cuda: which devices have a context, and synchronize(i)."""

    def __init__(self, contexts, fail=False):
        self.contexts, self.fail, self.synced = contexts, fail, []

    def is_initialized(self):
        return True

    def device_count(self):
        return len(self.contexts)

    def synchronize(self, index):
        if self.fail:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")
        self.synced.append(index)


def _fake_torch(monkeypatch, cuda):
    torch = types.ModuleType("torch")
    torch.cuda = cuda
    torch._C = types.SimpleNamespace(_cuda_hasPrimaryContext=lambda i: cuda.contexts[i])
    monkeypatch.setitem(sys.modules, "torch", torch)


def test_every_device_with_a_context_is_synchronised_at_both_edges(monkeypatch):
    from tests.fakes.sources import ScriptedSource

    cuda = _FakeCuda([True, False, True])  # device 1 was never used: no context is created for it
    _fake_torch(monkeypatch, cuda)
    meter = EnergyMeter([ScriptedSource()])
    meter.begin_window("w")
    m = meter.end_window("w")
    meter.close()
    assert cuda.synced == [0, 2, 0, 2] and m.status == "ok"


def test_a_failing_synchronisation_still_ends_the_window_as_partial(monkeypatch):
    from tests.fakes.sources import ScriptedSource

    cuda = _FakeCuda([True], fail=True)
    _fake_torch(monkeypatch, cuda)
    meter = EnergyMeter([ScriptedSource()])
    meter.begin_window("w")
    m = meter.end_window("w")
    assert m.status == "partial" and "CUDA synchronisation failed" in m.reason and "illegal memory access" in m.reason
    assert "more detail" not in m.reason
    assert not meter._windows and meter._thread is None  # the window ended and the sampler stopped
    meter.close()


def test_the_cuda_device_order_note_is_said_at_discovery_not_in_every_measurement(nvml, monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    nvml([FakeGpu(UUID_A, energy_mj=lambda: 1.0), FakeGpu(UUID_B, energy_mj=lambda: 1.0)])
    source, probe = probe_nvml()
    assert "CUDA_DEVICE_ORDER" in probe.detail
    meter = EnergyMeter([source])
    meter.begin_window("w")
    m = meter.end_window("w")
    meter.close()
    assert not any("CUDA_DEVICE_ORDER" in w for w in m.warnings)


@pytest.mark.parametrize(
    "rate_w, power_w, mode, words",
    [
        (0.0, 300.0, "integrated", "did not move"),  # a stuck counter (or a die that reports 0)
        (3000.0, 300.0, "integrated", "moved at 3000 W while it reported 300 W"),
        (280.0, 300.0, "counter", None),  # counter and power agree: the counter is used
        (0.0, 0.5, "counter", None),  # an idle GPU: too little power to judge, the counter is kept
    ],
)
def test_a_counter_is_trusted_only_if_it_moves_with_the_power_drawn(nvml, monkeypatch, rate_w, power_w, mode, words):
    counter = {"mj": 1_000.0}
    nvml([FakeGpu(UUID_A, energy_mj=lambda: counter["mj"], power_mw=lambda: power_w * 1000)])
    _working_counter(monkeypatch, counter, rate_w)
    source, probe = probe_nvml()
    (channel,) = source.channels()
    assert channel.provenance == mode
    if words:
        assert words in probe.detail and "polled and integrated instead" in probe.detail
        assert any(words in w for w in source.warnings)
    source.close()


class _Field:
    def __init__(self, mw, ret=0):
        self.nvmlReturn, self.value = ret, types.SimpleNamespace(uiVal=mw)


def test_polling_uses_instant_power_where_the_driver_has_it_and_says_when_it_is_an_average(nvml):
    mod = nvml([FakeGpu(UUID_A, energy_mj=None, power_mw=lambda: 250_000.0)])
    source, probe = probe_nvml()
    assert "1 s average power polled" in probe.detail and source.update_period_s == 1.0
    source.close()
    mod = nvml([FakeGpu(UUID_A, energy_mj=None, power_mw=lambda: 250_000.0)])
    mod.NVML_FI_DEV_POWER_INSTANT = 186
    mod.nvmlDeviceGetFieldValues = lambda h, ids: [_Field(410_000)] if ids == [186] else None
    source, probe = probe_nvml(poll_interval_s=0.05)
    assert "instant power polled every 0.05 s" in probe.detail and source.update_period_s == 0.05
    source.open()
    assert source._calls.power_w(source._devices[0].handle) == 410.0  # the instant field, not the average
    source.close()


@pytest.mark.parametrize("name, estimated", [("NVIDIA GH200 480GB", False), ("NVIDIA H100 80GB HBM3", True)])
def test_a_module_scope_counter_is_not_topped_up_with_a_cpu_estimate(nvml, monkeypatch, tmp_path, name, estimated):
    from wattlm.energy.discover import discover

    counter = {"mj": 0.0}
    nvml([FakeGpu(UUID_A, name=name, energy_mj=lambda: counter["mj"], power_mw=lambda: 400_000.0)])
    _working_counter(monkeypatch, counter, 400.0)
    found = discover(sysfs_root=tmp_path, memory_bytes=2**30)  # no RAPL: the Grace case
    names = [s.name for s in found.sources]
    assert ("estimate" in names) == estimated
    (gpu,) = [c for s in found.sources for c in s.channels() if c.domain == "gpu"]
    assert (gpu.covers == ("cpu", "dram")) == (not estimated)
    if not estimated:
        assert "module energy" in gpu.note
    for s in found.sources:
        s.close()


@pytest.mark.parametrize(
    "env, chosen",
    [
        ({"HIP_VISIBLE_DEVICES": "0"}, ["amd-b"]),  # HIP's device 0 is amdsmi's second
        ({"ROCR_VISIBLE_DEVICES": "1,2", "HIP_VISIBLE_DEVICES": "1"}, ["amd-a"]),  # HIP counts what ROCR left
        ({"HIP_VISIBLE_DEVICES": "GPU-hip-c"}, ["amd-c"]),  # HIP's UUIDs, not amdsmi's
        ({"CUDA_VISIBLE_DEVICES": "2,0"}, ["amd-a", "amd-b"]),
    ],
)
def test_amd_visibility_follows_hip_numbering(monkeypatch, env, chosen):
    for var in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    gpus = [
        FakeAmdGpu("amd-a", ticks=lambda: 0, hip_id=2, hip_uuid="GPU-hip-a"),
        FakeAmdGpu("amd-b", ticks=lambda: 0, hip_id=0, hip_uuid="GPU-hip-b"),
        FakeAmdGpu("amd-c", ticks=lambda: 0, hip_id=1, hip_uuid="GPU-hip-c"),
    ]
    monkeypatch.setitem(sys.modules, "amdsmi", make_fake_amdsmi(gpus))
    source, _ = probe_amdsmi()
    assert sorted(c.key.removeprefix("amdsmi:") for c in source.channels()) == sorted(chosen)
    source.close()


def test_amd_energy_uses_the_resolution_the_library_reports(monkeypatch):
    for var in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    ticks = {"n": 0}
    monkeypatch.setitem(sys.modules, "amdsmi", make_fake_amdsmi([FakeAmdGpu("amd-0", ticks=lambda: ticks["n"])]))
    source, _ = probe_amdsmi()
    source.open()
    ticks["n"] += 65_536  # 2**16 ticks of 2**-16 J: exactly 1 J (a rounded 15.3 µJ would say 1.0027 J)
    (reading,) = source.read().values()
    assert reading.energy_j == 1.0
    source.close()


def test_a_dual_die_part_is_reported_once_through_the_die_that_counts(monkeypatch):
    for var in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    even = {"n": 1000}
    gpus = [
        FakeAmdGpu("gcd-0", ticks=lambda: even["n"], market_name="AMD Instinct MI250X", power_w=lambda: 400.0),
        FakeAmdGpu("gcd-1", ticks=lambda: 0, market_name="AMD Instinct MI250X", power_w=lambda: 0.0),
    ]
    monkeypatch.setitem(sys.modules, "amdsmi", make_fake_amdsmi(gpus))
    monkeypatch.setattr(gpu.time, "sleep", lambda s: even.update(n=even["n"] + int(400 * s / (1 / 2**16))))
    source, probe = probe_amdsmi()
    (channel,) = source.channels()
    assert channel.key == "amdsmi:gcd-0" and channel.shared and "covers both dies" in channel.note
    assert channel.provenance == "counter"
    source.close()


def test_a_counter_that_steps_every_10_ms_passes_the_probe_and_measures_a_window(nvml):
    import time

    from tests.fakes.nvml import SteppingCounter

    nvml([FakeGpu(UUID_A, energy_mj=SteppingCounter(300.0), power_mw=lambda: 300_000.0)])
    source, probe = probe_nvml()  # a real 0.25 s probe against the stepping counter
    (channel,) = source.channels()
    assert channel.provenance == "counter" and "energy counter" in probe.detail
    meter = EnergyMeter([source])
    meter.begin_window("w")
    time.sleep(0.5)
    m = meter.end_window("w")
    meter.close()
    assert m.devices[0].energy_j == pytest.approx(300.0 * m.duration_s, rel=0.1)  # within the 10 ms steps
