"""What splitting energy per request costs the serving loop, measured directly: the time the engine
thread spends in the attributor (recording steps, fitting the work model, reading the meter and
splitting each interval) as a share of its wall time, with 8 concurrent requests on the default GGUF
(no HTTP, so nothing else shares the measurement). End-to-end throughput with attribution on and off
is in bench/serve_compare.py; on a machine whose speed drifts between runs this direct figure is the
sharper one.

    python bench/serve_attribution_cost.py [--requests 64] [--out bench/results/serve_attribution_cost.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    from wattlm.attribution.steps import Attributor
    from wattlm.cpuinfo import first_processor, model_name
    from wattlm.energy.meter import EnergyMeter
    from wattlm.serve.config import ServeConfig
    from wattlm.serve.load import load, plan
    from wattlm.serve.protocol import Params
    from wattlm.serve.scheduler import Done, Job, Scheduler
    from wattlm.serve.slo import BatchSizer

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_attribution_cost.json")
    args = parser.parse_args()
    config = ServeConfig(threads=2)
    loaded = load(config, plan(config))
    meter = EnergyMeter(interval_s=config.interval_s)
    meter.begin_window("cost")
    spent = {"step": 0.0, "settle": 0.0, "read": 0.0}

    def timed_read():
        t = time.perf_counter()
        out = meter.read_it_j()
        spent["read"] += time.perf_counter() - t
        return out

    attributor = Attributor(timed_read)
    for name in ("step", "settle"):
        real = getattr(attributor, name)

        def wrapped(*a, _real=real, _name=name):
            t = time.perf_counter()
            out = _real(*a)
            spent[_name] += time.perf_counter() - t
            return out

        setattr(attributor, name, wrapped)
    scheduler = Scheduler(
        loaded.engine,
        max_batch=8,
        max_queue=args.requests,
        step_tokens=config.step_tokens,
        attributor=attributor,
        sizer=BatchSizer(8),
        interval_s=config.interval_s,
    )
    prompt = loaded.engine.tokenize("To be, or not to be, that is the question: " * 12)[:128]
    params = Params(64, 0.0, 1.0, None, (), True, 0)
    finished = threading.Semaphore(0)

    def emit(event):
        if isinstance(event, Done):
            finished.release()

    for i in range(args.requests):
        scheduler.submit(Job(f"r{i}", prompt, params, emit))
    start = time.perf_counter()
    scheduler.start()
    for _ in range(args.requests):
        finished.acquire()
    wall = time.perf_counter() - start
    scheduler.stop(0)
    meter.end_window("cost")
    settle_only = spent["settle"] - spent["read"]
    result = {
        "what": "time the engine thread spends attributing energy, 8 concurrent 128+64-token requests",
        "cpu": model_name(first_processor()),
        "requests": args.requests,
        "steps": scheduler.steps,
        "wall_s": wall,
        "record_steps_s": spent["step"],
        "meter_reads_s": spent["read"],
        "split_s": settle_only,
        "share_of_wall": (spent["step"] + spent["settle"]) / wall,
        "target_at_most": 0.01,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
