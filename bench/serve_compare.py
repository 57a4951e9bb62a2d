"""wattlm serve against llama-cpp-python's server on the same GGUF, threads and machine, measured by
`wattlm load` (closed loop, chat requests of --input-len 128, 64-token answers), plus what the engine itself does
(`wattlm bench --batch-sizes 1,8`) in the same run.

    python bench/serve_compare.py [--out bench/results/serve_compare.json] [--duration 30] [--rounds 3]

One run measures, in this order:
  1. the engine: `wattlm bench --variants gguf-source --batch-sizes 1,8` (decode tok/s at batch 1 and 8);
  2. the peer: `python -m llama_cpp.server` (2 threads, --interrupt_requests False) at concurrency 1 and 8;
  3. wattlm serve at concurrency 1 and 8, then a decode-heavy shape (--input-len 16, 128-token
     answers) at concurrency 8, and the J/token and TPOT per batch size it learnt (GET /stats);
  4. energy attribution on vs off (`--no-attribution`), `--rounds` alternating servers at concurrency 8;
  5. `--slo-tpot` at concurrency 8: the batch cap it chose and why.
Targets (checked and written to the JSON): at concurrency 8 ≥ 4× the peer's output tokens per joule
and ≥ 90 % of the engine's batch-8 decode throughput; at concurrency 1 TTFT and TPOT within 10 % of
the peer's; no stream cut; attribution costs ≤ 1 % of throughput. The load generator shares the
machine with the server (see each level's `generator` record).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
THREADS = 2


@contextmanager
def server(command: list[str], health: str, log: Path):
    from tests.load.servers import wait_until_serving

    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        why = wait_until_serving(health, proc, 180.0, log)
        if why is not None:
            raise SystemExit(f"{command[:4]} did not start: {why}")
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)


def load(url: str, concurrency: str, run: Path, *, duration: float, shape: tuple[int, int]) -> list[dict]:
    cmd = ["wattlm", "load", "--url", url, "--concurrency", concurrency, "--duration", str(duration)]
    cmd += ["--warmup", "5", "--input-len", str(shape[0]), "--output-len", str(shape[1]), "--json", "--out", str(run)]
    r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"wattlm load failed:\n{r.stderr}")
    return json.loads(r.stdout)


def row(r: dict) -> dict:
    return {
        "level": r["level"],
        "status": r["status"],
        "requests_completed": r["requests_completed"],
        "requests_truncated": r["requests_truncated"],
        "output_tokens_mean": r["output_tokens_mean"],
        "output_tokens_per_s": r["output_tokens_per_s"],
        "ttft_p50_s": r["ttft_s"]["p50"],
        "ttft_p99_s": r["ttft_s"]["p99"],
        "tpot_p50_s": r["tpot_s"]["p50"],
        "tpot_p99_s": r["tpot_s"]["p99"],
        "avg_power_w": r["avg_power_w"],
        "j_per_output_token": r["j_per_output_token"],
        "tokens_per_j": 1 / r["j_per_output_token"] if r["j_per_output_token"] else None,
        "provenance": r["provenance"],
        "generator_cpu_s": r["generator"]["cpu_s"],
    }


def ledger_j_per_token(ledger: Path, level: dict) -> float | None:
    """J per output token of the ledger's requests that ended inside the level's metered window."""
    from wattlm.jsonlog import read_ledger

    start = datetime.fromisoformat(level["measurement"]["start_time"])
    end = datetime.fromisoformat(level["measurement"]["end_time"])
    inside = [
        x
        for x in read_ledger(ledger)
        if x["energy"] and start <= datetime.fromisoformat(x["arrival"]) + timedelta(seconds=x["e2e_s"]) <= end
    ]
    tokens = sum(x["completion_tokens"] for x in inside)
    return sum(x["energy"]["total_j"] for x in inside) / tokens if tokens else None


def main() -> None:
    from tests.load.servers import free_port, llama_server_command
    from wattlm.cpuinfo import first_processor, model_name
    from wattlm.httpget import get
    from wattlm.models.assets import DEFAULT_MODEL, fetch

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_compare.json")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "serve-compare")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slo-tpot", type=float, default=0.05)
    args = parser.parse_args()
    gguf = fetch(DEFAULT_MODEL)
    runs = args.runs
    runs.mkdir(parents=True, exist_ok=True)
    shape = (128, 64)
    started = time.time()

    def ours(name: str, *extra: str):
        port = free_port()
        ledger = runs / f"{name}-ledger.jsonl"
        ledger.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "wattlm", "serve", "--model", str(gguf), "--port", str(port)]
        cmd += ["--threads", str(THREADS), "--ledger", str(ledger), *extra]
        return server(cmd, f"http://127.0.0.1:{port}/health", runs / f"{name}.log"), f"http://127.0.0.1:{port}", ledger

    # 1. the engine
    bench_run = runs / "engine"
    r = subprocess.run(
        [sys.executable, "-m", "wattlm", "bench", "--variants", "gguf-source", "--batch-sizes", "1,8"]
        + ["--threads", str(THREADS), "--max-tokens", "4096", "--out", str(bench_run), "--json"],
        capture_output=True,
        text=True,
        timeout=3600,
        input="",
    )
    if r.returncode != 0:
        raise SystemExit(f"wattlm bench failed:\n{r.stderr}")
    (record,) = [x for x in json.loads(r.stdout) if x["variant"] == "gguf-source"]
    engine = {f"decode_b{d['batch_size']}_tokens_per_s": d["tokens_per_s"] for d in record["decode"]}
    engine["prefill_tokens_per_s"] = record["prefill"]["tokens_per_s"]

    # 2. the peer
    port = free_port()
    with server(
        llama_server_command(gguf, port, threads=THREADS, n_ctx=4096, limit_s=3600),
        f"http://127.0.0.1:{port}/v1/models",
        runs / "peer.log",
    ):
        peer = [
            row(x)
            for x in load(f"http://127.0.0.1:{port}/v1", "1,8", runs / "peer", duration=args.duration, shape=shape)
        ]

    # 3. wattlm serve
    ctx, url, ledger = ours("serve")
    with ctx:
        levels = load(url + "/v1", "1,8", runs / "serve", duration=args.duration, shape=shape)
        mine = [row(x) | {"ledger_j_per_output_token": ledger_j_per_token(ledger, x)} for x in levels]
        decode_heavy = [
            row(x) for x in load(url + "/v1", "8", runs / "serve-decode", duration=args.duration, shape=(16, 128))
        ]
        stats = json.loads(get(url + "/stats", 10)[1])

    # 4. attribution on vs off, alternating
    rounds = []
    for i in range(args.rounds):
        for attribution in (True, False):
            ctx, url, _ = ours(
                f"overhead-{i}-{'on' if attribution else 'off'}", *([] if attribution else ["--no-attribution"])
            )
            with ctx:
                (level,) = load(
                    url + "/v1", "8", runs / f"overhead-{i}-{attribution}", duration=args.duration, shape=shape
                )
            rounds.append({"round": i, "attribution": attribution, "output_tokens_per_s": level["output_tokens_per_s"]})
    on = statistics.median(x["output_tokens_per_s"] for x in rounds if x["attribution"])
    off = statistics.median(x["output_tokens_per_s"] for x in rounds if not x["attribution"])
    ratios = [a["output_tokens_per_s"] / b["output_tokens_per_s"] for a, b in zip(rounds[::2], rounds[1::2])]

    # 5. --slo-tpot
    ctx, url, _ = ours("slo", "--slo-tpot", str(args.slo_tpot))
    with ctx:
        (slo_level,) = load(url + "/v1", "8", runs / "slo", duration=args.duration, shape=shape)
        slo_stats = json.loads(get(url + "/stats", 10)[1])

    p1, p8 = peer
    m1, m8 = mine
    b8 = next((b for b in stats["batch_sizes"] if b["batch_size"] == 8), None)
    steps_b8 = 8 / b8["decode_only_tpot_s"] if b8 and b8["decode_only_steps"] else None
    targets = {
        "c8_tokens_per_j_vs_peer": {"measured": m8["tokens_per_j"] / p8["tokens_per_j"], "target": 4.0},
        "c8_output_tok_s_vs_engine_b8_decode": {
            "measured": m8["output_tokens_per_s"] / engine["decode_b8_tokens_per_s"],
            "target": 0.9,
        },
        "c8_decode_heavy_output_tok_s_vs_engine_b8_decode": {
            "measured": decode_heavy[0]["output_tokens_per_s"] / engine["decode_b8_tokens_per_s"],
            "target": 0.9,
        },
        "b8_decode_steps_tok_s_vs_engine_b8_decode": {
            "measured": steps_b8 / engine["decode_b8_tokens_per_s"] if steps_b8 else None,
            "target": 0.9,
        },
        "c1_ttft_vs_peer": {"measured": m1["ttft_p50_s"] / p1["ttft_p50_s"], "target_at_most": 1.1},
        "c1_tpot_vs_peer": {"measured": m1["tpot_p50_s"] / p1["tpot_p50_s"], "target_at_most": 1.1},
        "streams_cut": {"measured": sum(x["requests_truncated"] for x in mine + decode_heavy), "target_at_most": 0},
        "attribution_throughput_cost": {
            "measured": 1 - on / off,
            "target_at_most": 0.01,
            "paired_ratios_on_over_off": ratios,
        },
        "ledger_vs_load_j_per_token_c8": {
            "measured": m8["ledger_j_per_output_token"] / m8["j_per_output_token"] - 1,
            "target_within": 0.03,
        },
    }
    for t in targets.values():
        v = t["measured"]
        if v is None:
            t["met"] = None
        elif "target" in t:
            t["met"] = v >= t["target"]
        elif "target_at_most" in t:
            t["met"] = v <= t["target_at_most"]
        else:
            t["met"] = abs(v) <= t["target_within"]
    result = {
        "what": "wattlm serve vs llama-cpp-python server (0.3.36), default GGUF, 2 threads, closed loop",
        "cpu": model_name(first_processor()),
        "shape": {"input_tokens": shape[0], "output_tokens": shape[1]},
        "duration_s": args.duration,
        "engine": engine,
        "peer": peer,
        "serve": mine,
        "serve_decode_heavy": {"input_tokens": 16, "output_tokens": 128, "levels": decode_heavy},
        "serve_batch_sizes": stats["batch_sizes"],
        "serve_work_model": stats.get("work_model"),
        "attribution_rounds": rounds,
        "slo": {
            "slo_tpot_s": args.slo_tpot,
            "batch_cap": slo_stats["batch_cap"],
            "reason": slo_stats["batch_cap_reason"],
            "batch_sizes": slo_stats["batch_sizes"],
            "level": row(slo_level),
        },
        "targets": targets,
        "elapsed_s": time.time() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["targets"], indent=2))


if __name__ == "__main__":
    main()
