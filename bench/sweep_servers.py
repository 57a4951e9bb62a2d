"""`wattlm sweep` on this machine: llama.cpp's llama-server (slots 1,2,4,8 × threads 1,2) and wattlm
serve (max batch 1,2,4,8), each with its default configuration, 8 clients, chat shape (128 prompt /
64 output tokens), steady-state windows of 48 requests, two rounds in rotating order; then `wattlm
report` on each, and the choices, their savings against the default and their intervals in
bench/results/sweep.json.

    python bench/sweep_servers.py                      # both sweeps (about 40 min on 2 vCPUs)
    python bench/sweep_servers.py --runs runs/sweeps   # a folder that already holds them: resumed, then reported
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = ["--concurrency", "8", "--requests", "48", "--input-len", "128", "--output-len", "64"]
SLO = "itl_p50=0.2,ttft_p90=10"
SWEEPS = {
    "llama-server": ["--server", "llama-server", "--grid", "slots=1,2,4,8", "--grid", "threads=1,2"],
    "serve": ["--server", "serve", "--grid", "max_batch=1,2,4,8"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "sweeps")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sweep.json")
    args = parser.parse_args()
    from wattlm.environment import machine
    from wattlm.models.assets import DEFAULT_MODEL, fetch

    gguf = fetch(DEFAULT_MODEL)
    args.runs.mkdir(parents=True, exist_ok=True)
    wattlm = [sys.executable, "-m", "wattlm"]
    summary: dict = {"machine": machine(), "slo": SLO, "shape": SHAPE, "rounds": args.rounds, "sweeps": {}}
    for name, knobs in SWEEPS.items():
        run = args.runs / name
        command = [*wattlm, "sweep", *knobs, "--model", str(gguf), *SHAPE, "--slo", SLO]
        command += ["--rounds", str(args.rounds), "--out", str(run)]
        if (run / "run.json").is_file():
            subprocess.run([*wattlm, "sweep", "--resume", str(run)], check=True)
        else:
            subprocess.run(command, check=True)
        subprocess.run([*wattlm, "report", str(run), "--format", "json,md"], check=True)
        report = json.loads((run / "report" / "report.json").read_text())
        summary["sweeps"][name] = {
            "command": " ".join(c if c != sys.executable else "python" for c in command),
            "recommendation": report["recommendation"],
            "front": report["front"],
            "rows": [
                {
                    k: r[k]
                    for k in (
                        "config_id",
                        "level",
                        "rounds",
                        "j_per_output_token",
                        "j_per_request",
                        "j_per_request_interval",
                        "output_tokens_per_s",
                        "itl_p50_s",
                        "itl_p90_s",
                        "ttft_p90_s",
                        "avg_power_w",
                        "slo_met",
                        "provenance",
                    )
                }  # fmt: skip
                for r in report["rows"]
            ],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
