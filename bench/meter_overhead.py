"""Meter overhead, window cost and import time; writes bench/results/meter_overhead.json.

    python bench/meter_overhead.py [--seconds 10] [--reps 3] [--out FILE]

* Overhead: the same CPU-bound pure-Python workload (~--seconds long) timed unmetered, inside a
  wattlm window (10 Hz sampling), and inside CodeCarbon's OfflineEmissionsTracker (its default
  15 s interval, and at 0.1 s to match wattlm's rate), interleaved over --reps rounds in rotating
  order; overhead = median metered time / median unmetered time − 1. Because wall time on a shared
  VM varies by several % from run to run, the CPU time the meter's own threads use during the
  workload (process CPU − workload thread CPU, as % of wall time), the workload thread's own CPU
  time, the per-round paired wall ratio and the VM's steal time are reported beside it.
* Window cost: median wall time of begin_window and of end_window over 1000 windows on the meter
  that `discover()` builds on this machine.
* Import time: median over 10 fresh interpreters of `-X importtime`'s cumulative figure for wattlm.

Requires `pip install -e '.[bench]'` (CodeCarbon); without it the CodeCarbon rows say so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def workload(n: int) -> int:
    return sum(i * i for i in range(n))


def calibrate(seconds: float) -> int:
    n = 1_000_000
    start = time.perf_counter()
    workload(n)
    return int(n * seconds / (time.perf_counter() - start))


def steal_s() -> float:
    """Time the hypervisor gave this VM's CPUs to others (Linux /proc/stat), or 0 elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def timed(n: int, context) -> dict[str, float]:
    """One run of the workload: its wall time, its own thread's CPU time, the CPU time other threads
    of this process (the meter's sampler) used meanwhile as % of the wall time, and steal time."""
    with context():
        steal0 = steal_s()
        start, cpu0, own0 = time.perf_counter(), time.process_time(), time.thread_time()
        workload(n)
        wall = time.perf_counter() - start
        own = time.thread_time() - own0
        others = (time.process_time() - cpu0) - own
        steal = steal_s() - steal0
    return {"wall_s": wall, "workload_cpu_s": own, "meter_cpu_pct": max(0.0, others) / wall * 100, "steal_s": steal}


def wattlm_context(meter):
    return lambda: meter.window("bench")


def codecarbon_context(interval_s: float | None):
    import logging

    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)

    @contextlib.contextmanager
    def ctx():
        kwargs = {"country_iso_code": "FRA", "save_to_file": False, "log_level": "error"}
        if interval_s is not None:
            kwargs["measure_power_secs"] = interval_s
        tracker = OfflineEmissionsTracker(**kwargs)
        tracker.start()
        try:
            yield
        finally:
            tracker.stop()

    return ctx


def window_cost(n: int = 1000) -> dict[str, float]:
    from wattlm.energy.meter import EnergyMeter

    begin, end = [], []
    with EnergyMeter() as meter:
        for _ in range(n):
            t0 = time.perf_counter()
            meter.begin_window("w")
            t1 = time.perf_counter()
            meter.end_window("w")
            t2 = time.perf_counter()
            begin.append(t1 - t0)
            end.append(t2 - t1)
    return {
        "windows": n,
        "begin_median_ms": statistics.median(begin) * 1e3,
        "end_median_ms": statistics.median(end) * 1e3,
        "begin_p95_ms": sorted(begin)[int(0.95 * n)] * 1e3,
        "end_p95_ms": sorted(end)[int(0.95 * n)] * 1e3,
    }


def import_time_ms(runs: int = 10) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import wattlm"], capture_output=True, text=True, check=True
        ).stderr
        line = [ln for ln in err.splitlines() if ln.rstrip().endswith("| wattlm")][-1]
        samples.append(int(line.split("|")[1]) / 1000.0)  # cumulative µs → ms
    wall = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import wattlm"], check=True)
        wall.append(time.perf_counter() - t0)
    return {
        "runs": runs,
        "importtime_median_ms": statistics.median(samples),
        "interpreter_plus_import_wall_median_ms": statistics.median(wall) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "meter_overhead.json")
    args = parser.parse_args()

    from wattlm.energy.meter import EnergyMeter

    n = calibrate(args.seconds)
    meter = EnergyMeter(interval_s=0.1)
    configs = {"unmetered": contextlib.nullcontext, "wattlm_10hz": wattlm_context(meter)}
    codecarbon_note = ""
    try:
        import codecarbon

        configs["codecarbon_default_15s"] = codecarbon_context(None)
        configs["codecarbon_0.1s"] = codecarbon_context(0.1)
        codecarbon_note = f"codecarbon {codecarbon.__version__}"
    except ImportError:
        codecarbon_note = "codecarbon not installed: pip install -e '.[bench]'"
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    names = list(configs)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            runs[name].append(timed(n, configs[name]))
            print(f"rep {rep} {name}: {runs[name][-1]}", flush=True)
    meter.close()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    overhead = {}
    for name in names:
        # Each metered run against the unmetered run of the same round: slow drifts of the VM cancel.
        paired = [m["wall_s"] / u["wall_s"] - 1 for m, u in zip(runs[name], runs["unmetered"])]
        overhead[name] = {
            "wall_median_s": med(name, "wall_s"),
            "wall_overhead_pct": (med(name, "wall_s") / med("unmetered", "wall_s") - 1) * 100,
            "wall_overhead_paired_median_pct": statistics.median(paired) * 100,
            "workload_cpu_median_s": med(name, "workload_cpu_s"),
            "workload_cpu_overhead_pct": (med(name, "workload_cpu_s") / med("unmetered", "workload_cpu_s") - 1) * 100,
            "meter_thread_cpu_pct": med(name, "meter_cpu_pct"),
            "steal_median_s": med(name, "steal_s"),
            "runs": runs[name],
        }
    result = {
        "benchmark": "meter_overhead",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "workload": f"pure-Python sum of {n:,} squares (~{args.seconds:g} s), one thread",
        "reps": args.reps,
        "codecarbon": codecarbon_note,
        "overhead": overhead,
        "targets": {"overhead_pct_max": 1.0, "window_median_ms_max": 1.0, "import_ms_max": 150.0},
        "window_cost": window_cost(),
        "import_time": import_time_ms(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, o in overhead.items():
        print(
            f"{name:24s} wall {o['wall_median_s']:.3f} s ({o['wall_overhead_pct']:+.2f} %, paired"
            f" {o['wall_overhead_paired_median_pct']:+.2f} %), workload CPU {o['workload_cpu_overhead_pct']:+.2f} %,"
            f" meter threads {o['meter_thread_cpu_pct']:.3f} % of a core"
        )
    print(json.dumps({k: result[k] for k in ("window_cost", "import_time")}, indent=2))


if __name__ == "__main__":
    main()
