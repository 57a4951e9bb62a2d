import pytest

from wattlm.energy.discover import discover
from wattlm.energy.sources.estimate import (
    CpuIdentity,
    CpuSpec,
    EstimateSource,
    cpu_power_w,
    dram_power_w,
    identify_cpu,
    lookup_cpu,
)

GENOA = CpuSpec("AMD EPYC 9654", tdp_w=360.0, threads=192, source="test", matched_by="model name")


def test_power_model_at_pinned_utilisation():
    # 2 of 192 threads: share 1/96 of 360 W = 3.75 W at full load, 30 % of that when idle.
    assert cpu_power_w(GENOA, 2, 1.0) == pytest.approx(3.75)
    assert cpu_power_w(GENOA, 2, 0.0) == pytest.approx(1.125)
    assert cpu_power_w(GENOA, 2, 0.5) == pytest.approx(1.125 + 0.5 * 2.625)
    assert cpu_power_w(GENOA, 2, 1.7) == pytest.approx(3.75)  # clamped
    assert dram_power_w(16 * 2**30) == pytest.approx(6.0)


class FakeProcStat:
    """Busy/total CPU seconds advancing at a pinned utilisation, in step with a fake clock."""

    def __init__(self, utilisation: float, cpus: int):
        self.t = 0.0
        self.u, self.cpus = utilisation, cpus

    def clock(self) -> float:
        return self.t

    def cpu_times(self) -> tuple[float, float]:
        return self.u * self.t * self.cpus, self.t * self.cpus


def test_estimate_source_integrates_the_model():
    stat = FakeProcStat(utilisation=0.75, cpus=2)
    src = EstimateSource(GENOA, 2, 8 * 2**30, cpu_times=stat.cpu_times, clock=stat.clock)
    src.open()
    for _ in range(10):
        stat.t += 0.5
        r = src.read()
    assert r["estimate:cpu"].energy_j == pytest.approx(cpu_power_w(GENOA, 2, 0.75) * 5.0)
    assert r["estimate:dram"].energy_j == pytest.approx(3.0 * 5.0)
    assert all(c.provenance == "estimated" for c in src.channels())
    assert src.channels()[0].shared


def test_lookup_by_model_name_then_cpuid_then_generic():
    named = lookup_cpu(CpuIdentity("AMD EPYC 7763 64-Core Processor", "AuthenticAMD", 25, 1, 8))
    assert (named.tdp_w, named.threads, named.matched_by) == (280.0, 128, "model name")
    hidden = lookup_cpu(CpuIdentity("AMD EPYC", "AuthenticAMD", 25, 17, 2))
    assert (hidden.tdp_w, hidden.threads, hidden.matched_by) == (360.0, 192, "cpuid family/model")
    unknown = lookup_cpu(CpuIdentity("Mystery CPU 9000", "Other", 1, 1, 4))
    assert unknown.matched_by == "generic" and unknown.threads is None and unknown.tdp_w == 16.0


def test_identify_cpu_reads_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
        "model name\t: Intel(R) Xeon(R) Platinum 8480+\n\nprocessor\t: 1\nmodel name\t: other\n"
    )
    cpu = identify_cpu(info)
    assert (cpu.vendor, cpu.family, cpu.model) == ("GenuineIntel", 6, 143)
    assert lookup_cpu(cpu).tdp_w == 350.0


def test_discover_without_counters_estimates_and_says_why(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    found = discover(sysfs_root=tmp_path, memory_bytes=4 * 2**30)
    (source,) = found.sources
    assert source.name == "estimate"
    assert {c.domain for c in source.channels()} == {"cpu", "dram"}
    (warning,) = source.warnings
    assert "ESTIMATED" in warning and "does not exist" in warning
    assert [p.source for p in found.probes] == ["nvml", "amdsmi", "rapl", "estimate"]


def test_discover_with_rapl_package_estimates_only_dram(tmp_path, monkeypatch):
    import sys

    from tests.fakes.sysfs import add_zone

    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    add_zone(tmp_path, "intel-rapl:0", "package-0")
    found = discover(sysfs_root=tmp_path, memory_bytes=4 * 2**30)
    domains = {(c.domain, c.provenance) for s in found.sources for c in s.channels()}
    assert domains == {("cpu", "counter"), ("dram", "estimated")}


def test_proc_stat_reader_matches_psutil_and_falls_back(tmp_path):
    import psutil

    from wattlm.energy.sources.estimate import CpuTimes

    reader = CpuTimes()
    busy, total = reader()
    t = psutil.cpu_times()
    assert total == pytest.approx(sum(t), rel=0.01)
    assert busy == pytest.approx(sum(t) - t.idle - getattr(t, "iowait", 0) - getattr(t, "steal", 0), rel=0.05, abs=1.0)
    reader.close()
    fallback = CpuTimes(str(tmp_path / "no-such-file"))
    assert fallback()[1] == pytest.approx(sum(psutil.cpu_times()), rel=0.01)


def test_fake_proc_stat_layout(tmp_path):
    import os

    from wattlm.energy.sources.estimate import CpuTimes

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 800 20 5 5 20 0 0\ncpu0 1 2 3\n")
    busy, total = CpuTimes(str(stat))()
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert total == pytest.approx(1000 * tick)
    assert busy == pytest.approx((1000 - 800 - 20 - 20) * tick)


def test_rapl_permission_denied_falls_back_to_the_estimate_with_the_fix(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    from tests.fakes.sysfs import add_zone

    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    add_zone(tmp_path, "intel-rapl:0", "package-0")
    real_read_text = Path.read_text

    def denied(self, *args, **kwargs):  # what a non-root reader gets from energy_uj on Linux ≥ 5.10
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    found = discover(sysfs_root=tmp_path, memory_bytes=2**30)
    (source,) = found.sources
    assert source.name == "estimate"
    (warning,) = source.warnings
    assert "permission denied" in warning and "chmod" in warning


@pytest.mark.parametrize(
    "name, model, row",
    [
        ("Intel(R) Xeon(R) Platinum 8592+", 207, ("Intel Xeon Platinum 8592+ (Emerald Rapids)", "model name")),
        (
            "Intel(R) Xeon(R) Processor",
            207,
            ("Intel Xeon Emerald Rapids (model hidden; Platinum 8592+ assumed)", "cpuid family/model"),
        ),
        (
            "Intel(R) Xeon(R) Processor",
            173,
            ("Intel Xeon Granite Rapids (model hidden; Xeon 6980P assumed)", "cpuid family/model"),
        ),
        (
            "Intel(R) Xeon(R) Processor",
            143,
            ("Intel Xeon Sapphire Rapids (model hidden; Platinum 8480+ assumed)", "cpuid family/model"),
        ),
    ],
)
def test_recent_xeons_are_found_by_name_or_cpuid(name, model, row):
    spec = lookup_cpu(CpuIdentity(name, "GenuineIntel", 6, model, 2))
    assert (spec.name, spec.matched_by) == row and spec.source.startswith("Intel ARK")
