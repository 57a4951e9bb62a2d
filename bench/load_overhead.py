"""The load generator's own cost, against a fast test server in another process.

    python bench/load_overhead.py [--out bench/results/load_overhead.json] [--seconds 30]

At 10 requests/s (Poisson) of 64 streamed output tokens, measures the generator's CPU time (this
process: wattlm load's event loop, HTTP client and bookkeeping, plus the meter reading a trivial
source) per second of load, per request and per streamed token, and how late requests go out
against their arrival schedule. Targets: ≤ 3 % of one core; schedule error p99 ≤ 2 ms.
For scale it also runs a floor: the same arrivals read by bare asyncio sockets that only count
bytes (no HTTP parsing, no JSON, no bookkeeping) — what waking up once per streamed token costs here.
The test server streams each token 4 ms apart (64 tokens ≈ 0.25 s, about 2.6 requests in flight).
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def _bare_floor(port: int, seconds: float) -> dict[str, float]:
    """Bare asyncio sockets at 10 requests/s × 64 tokens: the cost of one wake-up per token."""
    import asyncio
    import random

    body = json.dumps(
        {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, "stream": True}
    ).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        events = 0
        while chunk := await reader.read(65536):
            events += chunk.count(b"data:")
        writer.close()
        return events

    rng, tasks = random.Random(0), []
    start = time.monotonic()
    cpu0, t = time.process_time(), start
    while t < start + seconds:
        t += rng.expovariate(10.0)
        await asyncio.sleep(max(0.0, t - time.monotonic()))
        tasks.append(asyncio.create_task(one()))
    tokens = sum(await asyncio.gather(*tasks)) - len(tasks)  # less each stream's [DONE]
    cpu_s = time.process_time() - cpu0
    return {"cpu_pct_of_one_core": 100.0 * cpu_s / seconds, "cpu_us_per_token": 1e6 * cpu_s / max(1, tokens)}


def main() -> None:
    from tests.load.test_run import ConstantPower
    from wattlm.cpuinfo import first_processor, model_name
    from wattlm.energy.meter import EnergyMeter
    from wattlm.load.config import Lengths, LoadConfig
    from wattlm.load.runner import run_load

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load_overhead.json")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", str(port), "0.004"], cwd=ROOT)
    try:
        time.sleep(1.0)
        text = ROOT / "bench" / "results" / ".load_overhead_text.txt"
        text.write_text("a few words to draw the prompts from " * 200)
        config = LoadConfig(
            url=f"http://127.0.0.1:{port}/v1",
            rates=(10.0,),
            duration_s=args.seconds,
            warmup_s=2.0,
            text=text,
            input_len=Lengths(128, 128),
            output_len=Lengths(64, 64),
        )
        import tempfile

        with tempfile.TemporaryDirectory() as tmp, EnergyMeter([ConstantPower()], interval_s=0.1) as meter:
            level = run_load(config, Path(tmp) / "run", meter=meter).levels[0]
        text.unlink()
        import asyncio

        floor = asyncio.run(_bare_floor(port, args.seconds))
    finally:
        server.terminate()
        server.wait()
    cpu_s, duration_s = level["generator"]["cpu_s"], level["duration_s"]
    tokens = level["window_output_tokens"]
    lag = level["schedule_lag_s"]
    result = {
        "what": "wattlm load's own CPU time at 10 requests/s × 64 streamed tokens, fast test server in another process",
        "cpu": model_name(first_processor()),
        "python": platform.python_version(),
        "duration_s": duration_s,
        "requests_sent": level["requests_sent"],
        "requests_completed": level["requests_completed"],
        "output_tokens_per_s": level["output_tokens_per_s"],
        "cpu_s": cpu_s,
        "cpu_pct_of_one_core": 100.0 * cpu_s / duration_s,
        "cpu_ms_per_request": 1000.0 * cpu_s / max(1, level["window_requests_completed"]),
        "cpu_us_per_token": 1e6 * cpu_s / tokens if tokens else None,
        "schedule_lag_ms": {k: None if v is None else 1000.0 * v for k, v in lag.items()},
        "floor_bare_asyncio_sockets": floor,
        "targets": {"cpu_pct_of_one_core": 3.0, "schedule_lag_p99_ms": 2.0},
    }
    result["meets_targets"] = {
        "cpu": result["cpu_pct_of_one_core"] <= 3.0,
        "schedule": (result["schedule_lag_ms"]["p99"] or 0.0) <= 2.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
