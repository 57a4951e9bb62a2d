import sys

import pytest

from tests.fakes.amdsmi import FakeAmdGpu, make_fake_amdsmi
from wattlm.energy.sources.amdsmi import probe_amdsmi


@pytest.fixture
def install(monkeypatch):
    for var in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    return lambda gpus: monkeypatch.setitem(sys.modules, "amdsmi", make_fake_amdsmi(gpus))


@pytest.mark.parametrize("old_key", [False, True])
def test_accumulator_times_resolution(install, old_key):
    ticks = {"n": 1000}
    install([FakeAmdGpu("uuid-0", ticks=lambda: ticks["n"], resolution_uj=15.3, old_key=old_key)])
    source, probe = probe_amdsmi()
    assert probe.available and "energy counter" in probe.detail
    (channel,) = source.channels()
    assert channel.provenance == "counter" and channel.label == "AMD Instinct MI300X (index 0)"
    source.open()
    ticks["n"] += 1_000_000
    assert source.read()[channel.key].energy_j == pytest.approx(15.3)


def test_power_fallback_and_unmeasurable(install):
    install([FakeAmdGpu("uuid-0", power_w=lambda: 500.0), FakeAmdGpu("uuid-1")])
    source, probe = probe_amdsmi()
    (channel,) = source.channels()
    assert channel.provenance == "integrated"
    assert "neither" in probe.detail


def test_hip_visible_devices(install, monkeypatch):
    install([FakeAmdGpu("uuid-0", ticks=lambda: 0), FakeAmdGpu("uuid-1", ticks=lambda: 0)])
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")
    source, _ = probe_amdsmi()
    assert [c.key for c in source.channels()] == ["amdsmi:uuid-1"]
