"""Does the ledger of wattlm serve agree with wattlm load on J per output token over the same window?

    python bench/serve_agreement.py [--duration 60] [--out bench/results/serve_agreement.json]

wattlm load divides the energy of its metered window by the tokens that arrived in it; the ledger
gives each request's own energy. Over a window, the two agree when the requests ending inside it
stand for the window's work: with fixed lengths and a closed loop, clients move in lockstep
(8 prompts read together, then 64 tokens decoded together), and a 30-second window holds only a few
such cycles, so where its edges fall decides both figures by up to one cycle's share. This script
uses mixed answer lengths (16:112, mean 64), which break the lockstep, and a 60-second window.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


SHAPE = ["--input-len", "128", "--output-len", "16:112"]


def main() -> None:
    from serve_compare import THREADS, ledger_j_per_token, load, row, server

    from tests.load.servers import free_port
    from wattlm.cpuinfo import first_processor, model_name
    from wattlm.models.assets import DEFAULT_MODEL, fetch

    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_agreement.json")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "serve-agreement")
    args = parser.parse_args()
    gguf = fetch(DEFAULT_MODEL)
    args.runs.mkdir(parents=True, exist_ok=True)
    ledger = args.runs / "ledger.jsonl"
    ledger.unlink(missing_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "wattlm", "serve", "--model", str(gguf), "--port", str(port)]
    cmd += ["--threads", str(THREADS), "--ledger", str(ledger)]
    levels = []
    with server(cmd, f"http://127.0.0.1:{port}/health", args.runs / "serve.log"):
        for c in ("1", "4", "8"):
            (level,) = load(f"http://127.0.0.1:{port}/v1", c, args.runs / f"c{c}", SHAPE, args.duration)
            mine = ledger_j_per_token(ledger, level)
            levels.append(
                row(level)
                | {
                    "ledger_j_per_output_token": mine,
                    "difference": mine / level["j_per_output_token"] - 1 if mine else None,
                }
            )
    result = {
        "what": "wattlm serve's ledger vs wattlm load, J per output token on the same window",
        "cpu": model_name(first_processor()),
        "shape": {"input_tokens": 128, "output_tokens": "16:112"},
        "duration_s": args.duration,
        "levels": levels,
        "target_within": 0.03,
        "met": all(x["difference"] is not None and abs(x["difference"]) <= 0.03 for x in levels),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
