import json
import threading
from importlib import resources

import jsonschema
import pytest

import wattlm
from tests.fakes.sources import ScriptedSource
from wattlm.energy.facility import Facility, resolve_carbon
from wattlm.energy.measurement import Measurement
from wattlm.energy.meter import EnergyMeter
from wattlm.errors import InvalidInputError, MeterError


def make_meter(*sources, **kwargs):
    kwargs.setdefault("facility", Facility(carbon=resolve_carbon("FR")))
    return EnergyMeter(list(sources), **kwargs)


def test_window_energy_is_the_difference_of_its_edges():
    gpu, cpu = ScriptedSource(), ScriptedSource("fake:cpu", "cpu", "estimated")
    meter = make_meter(gpu, cpu)
    meter.begin_window("earlier")  # opens the sources: what follows is energy they really report
    gpu.advance(100.0)
    assert meter.end_window("earlier").gpu_energy_j == 100.0
    gpu.advance(50.0)  # between windows, before "outer": not counted in it
    meter.begin_window("outer")
    gpu.advance(10.0)
    meter.begin_window("inner")
    gpu.advance(5.0)
    cpu.advance(2.0)
    inner = meter.end_window("inner")
    gpu.advance(1.0)
    outer = meter.end_window("outer")
    meter.close()
    assert (inner.gpu_energy_j, inner.cpu_energy_j, inner.it_energy_j) == (5.0, 2.0, 7.0)
    assert (outer.gpu_energy_j, outer.cpu_energy_j, outer.dram_energy_j) == (16.0, 2.0, None)
    assert outer.provenance == "estimated"  # the least trustworthy part decides
    assert outer.status == "ok" and outer.reason == ""
    assert outer.facility.co2e_g == pytest.approx(18.0 / 3.6e6 * 56)


def test_window_names_are_checked():
    meter = make_meter(ScriptedSource())
    meter.begin_window("a")
    with pytest.raises(MeterError, match="already open"):
        meter.begin_window("a")
    with pytest.raises(MeterError, match="no open window"):
        meter.end_window("b")
    meter.close()


def test_gap_makes_the_window_partial_with_reason():
    src = ScriptedSource()
    meter = make_meter(src)
    meter.begin_window("w")
    src.fail_next()
    m = meter.end_window("w")
    meter.close()
    assert m.status == "partial" and "1 interval(s) left out" in m.reason


def test_no_source_fails_loudly():
    meter = make_meter()
    meter.begin_window("w")
    m = meter.end_window("w")
    assert m.status == "failed" and "no energy source" in m.reason and m.provenance == "none"


def test_short_window_is_warned_about():
    meter = make_meter(ScriptedSource(update_period_s=0.1))
    meter.begin_window("w")
    m = meter.end_window("w")
    meter.close()
    assert any("update period" in w for w in m.warnings)


def test_sampler_runs_only_while_a_window_is_open():
    src = ScriptedSource()
    meter = make_meter(src, interval_s=0.01)
    assert not any(t.name == "wattlm-sampler" for t in threading.enumerate())
    meter.begin_window("w")
    assert src.wait_reads(src.reads + 10)  # the sampler thread reads on its own while the window is open
    m = meter.end_window("w")
    assert m.samples >= 10
    assert not any(t.name == "wattlm-sampler" for t in threading.enumerate())
    meter.close()


def test_peak_power_from_samples():
    src = ScriptedSource()
    clock = {"t": 0.0}
    meter = make_meter(src, interval_s=1.0, clock=lambda: clock["t"])
    meter.begin_window("w")
    with meter._lock:  # drive sampler reads by hand with a fake clock
        for joules in (10.0, 50.0, 20.0):
            clock["t"] += 1.0
            src.advance(joules)
            meter._read_all()
    clock["t"] += 1.0
    m = meter.end_window("w")
    meter.close()
    assert m.peak_power_w == pytest.approx(50.0)
    assert m.avg_power_w == pytest.approx(80.0 / 4.0)
    assert m.samples == 5


def test_context_manager_records_work_and_efficiency():
    src = ScriptedSource()
    meter = make_meter(src)
    with meter.window("prefill") as w:
        src.advance(4.0)
        w.add_work(tokens=100)
        w.add_work(tokens=20, flops=1e9)
    m = w.result
    assert m.work.tokens == 120 and m.tokens_per_j == pytest.approx(30.0)
    assert m.flop_per_j == pytest.approx(2.5e8)


def test_exception_in_window_gives_partial_result_and_propagates():
    src = ScriptedSource()
    meter = make_meter(src)
    w = meter.window("boom")
    with pytest.raises(RuntimeError):
        with w:
            src.advance(1.0)
            raise RuntimeError("oops")
    assert w.result.status == "partial" and "RuntimeError: oops" in w.result.reason
    assert w.result.it_energy_j == 1.0


def test_decorator_measures_each_call():
    src = ScriptedSource()
    meter = make_meter(src)
    results = []

    @wattlm.measure("step", meter=meter, on_result=results.append)
    def step(j):
        src.advance(j)
        return j * 2

    assert step(3.0) == 6.0
    assert step(1.0) == 2.0
    assert [r.it_energy_j for r in results] == [3.0, 1.0]


def test_idle_baseline_splits_static_and_dynamic():
    src = ScriptedSource()
    clock = {"t": 0.0}
    meter = make_meter(src, idle_power_w=2.0, clock=lambda: clock["t"])
    meter.begin_window("w")
    clock["t"] = 10.0
    src.advance(50.0)
    m = meter.end_window("w")
    assert (m.idle.static_energy_j, m.idle.dynamic_energy_j) == (20.0, 30.0)


def test_json_round_trip_matches_schema():
    src = ScriptedSource()
    meter = make_meter(src)
    with meter.window("w") as w:
        src.advance(7.5)
        w.add_work(tokens=3)
    m = w.result
    data = json.loads(m.to_json())
    schema = json.loads(resources.files("wattlm.energy").joinpath("measurement.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert Measurement.from_json(m.to_json()) == m
    data["schema"] = "wattlm.measurement/99"
    with pytest.raises(InvalidInputError, match="schema"):
        Measurement.from_dict(data)


def test_bad_interval_is_rejected():
    with pytest.raises(InvalidInputError):
        EnergyMeter([], interval_s=0)


def test_sampler_honours_the_tightest_source_interval():
    meter = make_meter(ScriptedSource(max_read_interval_s=0.02), interval_s=0.1)
    assert meter._sample_s == 0.02


def test_windows_from_several_threads_keep_their_sampler():
    src = ScriptedSource()
    meter = make_meter(src, interval_s=0.005)
    errors = []

    def worker(i):
        try:
            for j in range(50):
                meter.begin_window(f"t{i}-{j}")
                src.advance(1.0)
                meter.end_window(f"t{i}-{j}")
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    meter.begin_window("last")
    assert src.wait_reads(src.reads + 5)  # the sampler is alive for this window
    m = meter.end_window("last")
    meter.close()
    assert m.samples >= 5
    assert not any(t.name == "wattlm-sampler" for t in threading.enumerate())


def test_windows_record_steal_time_and_process_cpu_time():
    from wattlm.procstat import CpuTimes, parse

    # total 100 s of CPU time over the window, 20 s of it stolen by the hypervisor
    times = iter([CpuTimes(10.0, 1000.0, 5.0), CpuTimes(60.0, 1100.0, 25.0)])
    src = ScriptedSource()
    meter = EnergyMeter([src], interval_s=10.0, cpu_times=lambda: next(times))
    meter.begin_window("w")
    sum(i * i for i in range(200_000))  # some CPU time of this process
    m = meter.end_window("w")
    assert m.steal_fraction == pytest.approx(0.2) and m.process_cpu_s > 0
    assert any("hypervisor took 20 % of this machine's CPU time" in w for w in m.warnings)
    quiet = iter([CpuTimes(0.0, 0.0, 0.0), CpuTimes(1.0, 100.0, 1.0)])
    m = EnergyMeter([src], interval_s=10.0, cpu_times=lambda: next(quiet)).window("q")
    with m:
        pass
    assert m.result.steal_fraction == pytest.approx(0.01) and not any("steal" in w for w in m.result.warnings)
    unknown = EnergyMeter([src], interval_s=10.0, cpu_times=lambda: None).window("u")
    with unknown:
        pass
    assert unknown.result.steal_fraction is None
    # the aggregate /proc/stat line: user nice system idle iowait irq softirq steal, in clock ticks
    t = parse(b"cpu  100 0 50 800 10 5 5 30 0 0", 0.01)
    assert (t.busy_s, t.total_s, t.steal_s) == pytest.approx((1.6, 10.0, 0.3))


def test_measurements_written_before_the_cpu_fields_still_read():
    src = ScriptedSource()
    with make_meter(src).window("w") as w:
        src.advance(1.0)
    data = w.result.to_dict()
    del data["process_cpu_s"], data["steal_fraction"]
    old = Measurement.from_dict(data)
    assert old.process_cpu_s is None and old.steal_fraction is None and old.it_energy_j == 1.0
