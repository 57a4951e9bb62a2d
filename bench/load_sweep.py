"""The serving baseline: llama-cpp-python's OpenAI-compatible server on the default GGUF, under
`wattlm load` at concurrency 1, 2, 4 and at request rates below and above its saturation.

    python bench/load_sweep.py [--out bench/results/load_sweep.json] [--duration 30]

Starts `python -m llama_cpp.server` on 127.0.0.1 (2 threads, requests queued rather than cut:
--interrupt_requests False), runs two `wattlm load` runs (closed loop, then open loop) with a
5-second idle baseline, writes their level records (J per output token, TTFT/TPOT p50/p99,
goodput under ttft=2,tpot=0.1) as JSON, and leaves the run folders for `wattlm report`.
The load generator shares the machine with the server; see each level's `generator` record.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SLO = "ttft=2,tpot=0.1"


def main() -> None:
    from tests.load.servers import free_port, llama_server_command, wait_until_serving
    from wattlm.cpuinfo import first_processor, model_name
    from wattlm.models.assets import DEFAULT_MODEL, fetch

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load_sweep.json")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "load-sweep")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--rates", default="0.25,0.5,1")
    args = parser.parse_args()
    gguf = fetch(DEFAULT_MODEL)
    port = free_port()
    args.runs.mkdir(parents=True, exist_ok=True)
    log = args.runs / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            llama_server_command(gguf, port, n_ctx=4096, limit_s=3600), stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        why = wait_until_serving(url + "/models", server, 120.0, log)
        if why is not None:
            raise SystemExit(f"llama_cpp.server did not start: {why}")
        common = ["--input-len", "128", "--output-len", "64", "--duration", str(args.duration), "--warmup", "5"]
        common += ["--slo", SLO, "--idle-s", "5", "--json"]
        records = {}
        commands = {}
        for name, load in (("concurrency", ["--concurrency", "1,2,4"]), ("rate", ["--rate", args.rates])):
            run = args.runs / name
            cmd = ["wattlm", "load", "--url", url, *load, *common, "--out", str(run)]
            commands[name] = " ".join(cmd)
            r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, timeout=1800)
            if r.returncode != 0:
                raise SystemExit(f"{name}: wattlm load failed:\n{r.stderr}")
            records[name] = json.loads(r.stdout)
    finally:
        server.terminate()
        server.wait()

    def row(r: dict) -> dict:
        keys = ("level", "status", "requests_sent", "requests_completed", "requests_truncated", "output_tokens_per_s")
        out = {k: r[k] for k in keys}
        out |= {
            "ttft_p50_s": r["ttft_s"]["p50"],
            "ttft_p99_s": r["ttft_s"]["p99"],
            "tpot_p50_s": r["tpot_s"]["p50"],
            "tpot_p99_s": r["tpot_s"]["p99"],
            "goodput_per_s": r["goodput_per_s"],
            "slo_attainment": r["slo_attainment"],
            "avg_power_w": r["avg_power_w"],
            "j_per_output_token": r["j_per_output_token"],
            "j_per_request": r["j_per_request"],
            "j_per_good_request": r["j_per_good_request"],
            "j_per_output_token_above_idle": (r.get("above_idle") or {}).get("j_per_output_token"),
            "provenance": r["provenance"],
            "generator_cpu_s": r["generator"]["cpu_s"],
            "generator_energy_j": r["generator"]["energy_j"],
        }
        return out

    result = {
        "what": "llama-cpp-python server (default GGUF, 2 threads) under wattlm load",
        "cpu": model_name(first_processor()),
        "slo": SLO,
        "commands": commands,
        "levels": [row(r) for name in records for r in records[name]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
