"""Soak test of wattlm serve: many requests of mixed lengths at a rate above what the server can
serve, a tenth of the clients leaving mid-stream. Checks, and writes as JSON: no crash, every slot
free at the end, every completed request in the ledger exactly once (by id, against what the clients
saw), cancelled requests ledgered as cancelled, overload answered 429, and the server's memory after
warm-up (RSS sampled every second).

    python bench/serve_soak.py [--requests 1000] [--rate 5] [--model FILE.gguf] [--out bench/results/serve_soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORDS = "to be or not to be that is the question whether tis nobler in the mind to suffer the slings".split()


async def one(session, url: str, rng: random.Random, out: dict) -> None:
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 64)))
    stream = rng.random() < 0.8
    leave_after = rng.randint(1, 6) if stream and rng.random() < 0.1 else None
    body = {
        "prompt": prompt,
        "max_tokens": rng.randint(1, 32),
        "temperature": rng.choice([0.0, 0.8]),
        "ignore_eos": True,
        "stream": stream,
    }
    try:
        async with session.post(url + "/v1/completions", json=body) as r:
            if r.status != 200:
                out["status"][r.status] = out["status"].get(r.status, 0) + 1
                await r.read()
                return
            if not stream:
                data = await r.json()
                out["completed"].add(data["id"])
                return
            chunks, rid = 0, None
            async for line in r.content:
                if not line.startswith(b"data: {"):
                    if line.startswith(b"data: [DONE]"):
                        out["completed"].add(rid)
                    continue
                rid = json.loads(line[6:])["id"]
                chunks += 1
                if leave_after is not None and chunks >= leave_after:
                    out["left"].add(rid)
                    return  # leaving the context closes the connection mid-stream
    except Exception as e:  # noqa: BLE001  # a soak counts every failure kind
        out["errors"][type(e).__name__] = out["errors"].get(type(e).__name__, 0) + 1


async def drive(url: str, n: int, rate: float, seed: int) -> dict:
    import aiohttp

    rng = random.Random(seed)
    out: dict = {"status": {}, "completed": set(), "left": set(), "errors": {}}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        tasks = []
        start = time.monotonic()
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(session, url, random.Random(rng.random()), out)))
        await asyncio.gather(*tasks)
    return out


def main() -> None:
    import psutil

    from tests.load.servers import free_port, wait_until_serving
    from wattlm.cpuinfo import first_processor, model_name
    from wattlm.httpget import get
    from wattlm.jsonlog import read_ledger
    from wattlm.models.assets import DEFAULT_MODEL, fetch

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_soak.json")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "serve-soak")
    args = parser.parse_args()
    gguf = args.model or fetch(DEFAULT_MODEL)
    args.runs.mkdir(parents=True, exist_ok=True)
    ledger, log = args.runs / "ledger.jsonl", args.runs / "serve.log"
    ledger.unlink(missing_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "wattlm", "serve", "--model", str(gguf), "--port", str(port), "--threads", "2"]
    cmd += ["--max-batch", "8", "--max-queue", "32", "--ledger", str(ledger)]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    why = wait_until_serving(url + "/health", proc, 180, log)
    if why is not None:
        raise SystemExit(f"wattlm serve did not start: {why}")
    rss: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while not done.wait(1.0):
            rss.append((time.monotonic(), p.memory_info().rss))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    seen = asyncio.run(drive(url, args.requests, args.rate, 0))
    elapsed = time.monotonic() - started
    time.sleep(1.0)
    health = json.loads(get(url + "/health", 10)[1])
    stats = json.loads(get(url + "/stats", 10)[1])
    done.set()
    alive = proc.poll() is None
    proc.terminate()
    code = proc.wait(120)
    lines = read_ledger(ledger)
    ids = [x["id"] for x in lines]
    completed = {x["id"] for x in lines if x["status"] == "completed"}
    cancelled = {x["id"] for x in lines if x["status"] == "cancelled"}
    quarter = max(1, len(rss) // 4)
    warm = statistics.median(r for _, r in rss[quarter : 2 * quarter]) if len(rss) >= 8 else None
    last = statistics.median(r for _, r in rss[-quarter:]) if len(rss) >= 8 else None
    result = {
        "what": "wattlm serve soak: mixed lengths above capacity, 10 % of streams left mid-way",
        "cpu": model_name(first_processor()),
        "model": str(gguf),
        "requests_sent": args.requests,
        "rate_per_s": args.rate,
        "elapsed_s": elapsed,
        "client": {
            "completed": len(seen["completed"]),
            "left_mid_stream": len(seen["left"]),
            "http_status": seen["status"],
            "errors": seen["errors"],
        },
        "server_alive_at_end": alive,
        "exit_code_after_sigterm": code,
        "slots_free_at_end": health.get("slots_free"),
        "slots": health.get("slots"),
        "in_flight_at_end": health.get("in_flight"),
        "ledger": {
            "lines": len(lines),
            "unique_ids": len(set(ids)),
            "completed": len(completed),
            "cancelled": len(cancelled),
            "failed": sum(x["status"] == "failed" for x in lines),
        },
        # a stream its client left may still have finished on the server before it noticed
        "every_client_completion_ledgered_once": seen["completed"] <= completed
        and completed - seen["completed"] <= seen["left"]
        and len(ids) == len(set(ids)),
        "every_left_stream_ledgered_cancelled_or_finished": seen["left"] <= (cancelled | completed),
        "rss_bytes": {
            "after_warmup_median": warm,
            "last_quarter_median": last,
            "growth": (last / warm - 1) if warm and last else None,
            "samples": len(rss),
        },
        "energy_j": stats.get("energy_j"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
