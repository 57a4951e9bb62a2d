import random
from pathlib import Path

import pytest

from tests.fakes.sysfs import add_zone, set_energy
from wattlm.energy.sources.rapl import probe_rapl


def test_thousand_wraps_give_exact_energy(tmp_path):
    max_range = 1_000_000  # small range so a long window wraps often
    zone = add_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=123_456, max_range_uj=max_range)
    source, probe = probe_rapl(tmp_path)
    assert probe.available, probe.detail
    source.open()
    rng = random.Random(7)
    raw, expected_uj, wraps = 123_456, 0, 0
    for _ in range(5000):
        step = rng.randrange(0, max_range)  # always less than one full range between reads
        expected_uj += step
        wraps += (raw + step) // (max_range + 1)
        raw = (raw + step) % (max_range + 1)
        set_energy(zone, raw)
        reading = source.read()["rapl:package-0"]
    assert wraps >= 1000
    assert reading.gaps == 0
    assert reading.energy_j == expected_uj / 1e6


def test_read_interval_keeps_wraps_apart(tmp_path):
    zone = add_zone(tmp_path, "intel-rapl:0", "package-0", max_range_uj=262_143_328_850)
    (zone / "constraint_0_max_power_uw").write_text("400000000\n")  # 400 W
    source, _ = probe_rapl(tmp_path)
    # 262 kJ at 400 W wraps every 655 s; four reads per wrap.
    assert source.max_read_interval_s == pytest.approx(262_143.32885 / 400 / 4)


def test_unreadable_max_range_drops_the_wrapped_interval(tmp_path):
    zone = add_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=900, max_range_uj=None)
    source, probe = probe_rapl(tmp_path)
    assert "dropped" in probe.detail
    source.open()
    set_energy(zone, 1000)
    assert source.read()["rapl:package-0"].energy_j == pytest.approx(100e-6)
    set_energy(zone, 50)  # wrapped, range unknown: drop, never negative
    r = source.read()["rapl:package-0"]
    assert r.energy_j == pytest.approx(100e-6)
    assert r.gaps == 1
    set_energy(zone, 80)
    r = source.read()["rapl:package-0"]
    assert r.energy_j == pytest.approx(130e-6)
    assert r.gaps == 1


def test_permission_denied_says_how_to_fix(tmp_path, monkeypatch):
    add_zone(tmp_path, "intel-rapl:0", "package-0")
    real_read_text = Path.read_text

    def denied(self, *args, **kwargs):  # the kernel's answer to a non-root reader since Linux 5.10
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    source, probe = probe_rapl(tmp_path)
    assert not probe.available
    assert source.channels() == ()
    assert "permission denied" in probe.detail and "chmod" in probe.detail


def test_duplicates_and_subdomains_are_not_counted_twice(tmp_path):
    pkg = add_zone(tmp_path, "intel-rapl:0", "package-0")
    add_zone(tmp_path, "intel-rapl:0:0", "core")
    add_zone(tmp_path, "intel-rapl:0:1", "uncore")
    dram = add_zone(tmp_path, "intel-rapl:0:2", "dram")
    mmio = add_zone(tmp_path, "intel-rapl-mmio:0", "package-0")
    add_zone(tmp_path, "intel-rapl:1", "psys")
    source, _ = probe_rapl(tmp_path)
    keys = sorted(c.key for c in source.channels())
    assert keys == ["rapl:dram-0", "rapl:package-0"]
    assert [c.label for c in source.channels() if c.key == "rapl:package-0"][0].startswith("CPU package-0")
    source.open()
    set_energy(pkg, 5_000_000)
    set_energy(dram, 1_000_000)
    set_energy(mmio, 99_000_000)  # the MMIO copy must not be read
    r = source.read()
    assert r["rapl:package-0"].energy_j == 5.0
    assert r["rapl:dram-0"].energy_j == 1.0


def test_psys_used_only_without_package(tmp_path):
    add_zone(tmp_path, "intel-rapl:1", "psys")
    source, probe = probe_rapl(tmp_path)
    assert probe.available
    assert [c.key for c in source.channels()] == ["rapl:psys"]


def test_two_sockets(tmp_path):
    add_zone(tmp_path, "intel-rapl:0", "package-0")
    add_zone(tmp_path, "intel-rapl:0:0", "dram")
    add_zone(tmp_path, "intel-rapl:1", "package-1")
    add_zone(tmp_path, "intel-rapl:1:0", "dram")
    source, _ = probe_rapl(tmp_path)
    assert sorted(c.key for c in source.channels()) == [
        "rapl:dram-0",
        "rapl:dram-1",
        "rapl:package-0",
        "rapl:package-1",
    ]


def test_absent_powercap_is_a_placeholder_with_reason(tmp_path):
    source, probe = probe_rapl(tmp_path)
    assert source.channels() == ()
    assert not probe.available and "does not exist" in probe.detail


def test_zone_with_unknown_range_keeps_the_read_interval_short(tmp_path):
    add_zone(tmp_path, "intel-rapl:0", "package-0", max_range_uj=262_143_328_850)  # wraps every ~65 s at 1 kW
    add_zone(tmp_path, "intel-rapl:0:0", "dram", max_range_uj=None)
    source, _ = probe_rapl(tmp_path)
    assert source.max_read_interval_s == 1.0
