"""Meter overhead, window cost and import time; writes bench/results/meter_overhead.json.

    python bench/meter_overhead.py [--seconds 10] [--reps 3] [--out FILE]

* Overhead: the same CPU-bound pure-Python workload (~--seconds long) timed unmetered, inside a
  wattlm window (10 Hz sampling), and inside CodeCarbon's OfflineEmissionsTracker (its default
  15 s interval, and at 0.1 s to match wattlm's rate), interleaved over --reps rounds in rotating
  order; overhead = median metered time / median unmetered time − 1. Because wall time on a shared
  VM varies by several % from run to run, the CPU time the meter's own threads use during the
  workload (process CPU − workload thread CPU, as % of wall time) is reported beside it.
* Window cost: median wall time of begin_window and of end_window over 1000 windows on the meter
  that `discover()` builds on this machine.
* Import time: median over 10 fresh interpreters of `-X importtime`'s cumulative figure for wattlm.

Requires `pip install -e '.[bench]'` (CodeCarbon); without it the CodeCarbon rows say so.
"""

from __future__ import annotations

import argparse
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


def timed(n: int, context) -> tuple[float, float]:
    """Wall time of the workload, and the CPU time other threads of this process (the meter's
    sampler) used meanwhile, as a share of that wall time."""
    with context():
        start, cpu0, own0 = time.perf_counter(), time.process_time(), time.thread_time()
        workload(n)
        wall = time.perf_counter() - start
        others = (time.process_time() - cpu0) - (time.thread_time() - own0)
    return wall, max(0.0, others) / wall * 100


def wattlm_context(meter):
    return lambda: meter.window("bench")


def codecarbon_context(interval_s: float | None):
    import contextlib
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
    return {"runs": runs, "importtime_median_ms": statistics.median(samples), "interpreter_plus_import_wall_median_ms": statistics.median(wall) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "meter_overhead.json")
    args = parser.parse_args()

    from wattlm.energy.meter import EnergyMeter

    n = calibrate(args.seconds)
    meter = EnergyMeter(interval_s=0.1)
    configs = {"unmetered": lambda: __import__("contextlib").nullcontext(), "wattlm_10hz": wattlm_context(meter)}
    codecarbon_note = ""
    try:
        import codecarbon

        configs["codecarbon_default_15s"] = codecarbon_context(None)
        configs["codecarbon_0.1s"] = codecarbon_context(0.1)
        codecarbon_note = f"codecarbon {codecarbon.__version__}"
    except ImportError:
        codecarbon_note = "codecarbon not installed: pip install -e '.[bench]'"
    times: dict[str, list[float]] = {name: [] for name in configs}
    other_cpu: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            wall, others_pct = timed(n, configs[name])
            times[name].append(wall)
            other_cpu[name].append(others_pct)
            print(f"rep {rep} {name}: {wall:.3f} s, other threads' CPU {others_pct:.3f} %", flush=True)
    meter.close()
    base = statistics.median(times["unmetered"])
    overhead = {
        name: {
            "median_s": statistics.median(t),
            "runs_s": t,
            "overhead_pct": (statistics.median(t) / base - 1) * 100,
            "meter_thread_cpu_pct": statistics.median(other_cpu[name]),
        }
        for name, t in times.items()
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
    print(json.dumps({k: v for k, v in result.items() if k in ("overhead", "window_cost", "import_time")}, indent=2))


if __name__ == "__main__":
    main()
