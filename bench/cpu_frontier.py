"""The CPU frontier of one model: llama.cpp on the model's own file, llama.cpp's own quantizer of the
4-bit and 8-bit block types, wattlm's GPTQ onto the same blocks, and ONNX Runtime GenAI — in one
`wattlm bench --rounds N` run, so every comparison is a paired ratio with a 95 % interval.

    python bench/cpu_frontier.py --rounds 8                       # the default model
    python bench/cpu_frontier.py --model runs/ft/model --variants gguf-q8_0,gguf-q4_0,gguf-gptq-q4_0 \\
        --label fine-tuned --out bench/results/cpu_frontier_finetuned.json

Writes JSON: the run's records summarised per variant (perplexity, ΔPPL against fp32 where fp32 is
in the run, prefill and batch-1 decode tokens/s and J/token, energy per query, paired ratios to the
baseline), the targets (energy per query ≥ 1.5× lower than the baseline at ΔPPL ≤ 3 % vs fp32, its
interval's lower bound above 1; each gptq-TYPE below llama.cpp's TYPE in perplexity at a speed whose
interval includes 1 or lies above it), and each file's batch-1 decode against its memory-bandwidth
bound (bytes read per token ÷ the read bandwidth measured here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_VARIANTS = (
    "gguf-source,fp32,gguf-q4_0,gguf-gptq-q4_0,gguf-iq4_nl,gguf-gptq-iq4_nl,gguf-q4_1,gguf-gptq-q4_1,"
    "gguf-q8_0,gguf-gptq-q8_0,ort-int4,ort-int8"
)
TYPES = ("q4_0", "iq4_nl", "q4_1", "q8_0")


def read_bandwidth_gb_s(threads: int, size_mb: int = 1024, repeats: int = 5) -> float:
    """Read bandwidth with `threads` torch threads: the best of `repeats` sums over a float32 array of
    `size_mb` MB (much larger than any cache), in GB/s. Decoding one token reads every weight once."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(size_mb * 2**20 // 4)
    x.sum()  # touch every page first
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best / 1e9


def _decode1(record: dict) -> dict:
    return next((d for d in record.get("decode") or [] if d["batch_size"] == 1), (record.get("decode") or [{}])[0])


def summarise(records: list[dict], config: dict, bandwidth: float) -> dict:
    from wattlm.intervals import paired_ratio
    from wattlm.results import query_energy_j

    by = {r["variant"]: r for r in records}
    fp32 = by.get("fp32")
    rows = {}
    for r in records:
        if r.get("status") != "ok":
            rows[r["variant"]] = {"status": r.get("status"), "reason": r.get("reason")}
            continue
        d = _decode1(r)
        bound = bandwidth * 1e9 / r["model_bytes"] if r.get("model_bytes") else None
        rows[r["variant"]] = {
            "engine": r["engine"],
            "dtype": r["dtype"],
            "ppl": r["ppl"],
            "kl": r["kl"],
            "delta_ppl_vs_fp32_pct": 100 * (r["ppl"] / fp32["ppl"] - 1) if fp32 and fp32.get("ppl") else None,
            "model_bytes": r.get("model_bytes"),
            "prefill_tokens_per_s": r["prefill"]["tokens_per_s"],
            "prefill_j_per_token": r["prefill"]["j_per_token"],
            "decode_tokens_per_s": d.get("tokens_per_s"),
            "decode_j_per_token": d.get("j_per_token"),
            "query_j": query_energy_j(
                config["prompt_len"], config["new_tokens"], r["prefill"]["j_per_token"], d.get("j_per_token")
            ),
            "paired": {
                k: v
                for k, v in (r.get("paired") or {}).items()
                if k in ("prefill", "decode", "query_energy", "missing")
            },
            "decode_bandwidth_bound_tokens_per_s": bound,
            "decode_share_of_bound": d["tokens_per_s"] / bound if bound and d.get("tokens_per_s") else None,
        }

    def pair(a: str, b: str, phase: str) -> dict | None:
        """Paired per-round tokens/s ratio of variant a over variant b (both in the run's rounds)."""
        if a not in by or b not in by or "prefill" not in by[a] or "prefill" not in by[b]:
            return None
        pa = by[a]["prefill"] if phase == "prefill" else _decode1(by[a])
        pb = by[b]["prefill"] if phase == "prefill" else _decode1(by[b])
        found = paired_ratio(pa["per_round"]["tokens_per_s"], pb["per_round"]["tokens_per_s"])
        return found.to_dict() if found else None

    calibration = {}
    for t in TYPES:
        ours, theirs = f"gguf-gptq-{t}", f"gguf-{t}"
        if ours in rows and theirs in rows and "ppl" in rows[ours] and "ppl" in rows[theirs]:
            speed = {phase: pair(ours, theirs, phase) for phase in ("prefill", "decode")}
            calibration[t] = {
                "gptq_ppl": rows[ours]["ppl"],
                "llamacpp_ppl": rows[theirs]["ppl"],
                "ppl_change_pct": 100 * (rows[ours]["ppl"] / rows[theirs]["ppl"] - 1),
                "bytes": [rows[ours]["model_bytes"], rows[theirs]["model_bytes"]],
                "speed_ratio": speed,
                "lower_perplexity": rows[ours]["ppl"] < rows[theirs]["ppl"],
                "speed_not_worse": all(s is None or s["high"] is None or s["high"] >= 1 for s in speed.values()),
            }
    headline = []
    for name, row in rows.items():
        q = (row.get("paired") or {}).get("query_energy")
        dppl = row.get("delta_ppl_vs_fp32_pct")
        if q and dppl is not None:
            headline.append(
                {
                    "variant": name,
                    "query_energy_ratio": q,
                    "delta_ppl_vs_fp32_pct": dppl,
                    "meets": dppl <= 3.0 and q["median"] >= 1.5 and (q["low"] or 0) > 1.0,
                }
            )
    return {"variants": rows, "calibration_vs_llamacpp": calibration, "headline": headline}


def main() -> None:
    from wattlm.cpuinfo import first_processor, model_name

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--min-phase-s", type=float, default=2.0)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--label", default="default model")
    parser.add_argument("--run", type=Path, default=None, help="bench run folder (default: a new one under runs/)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu_frontier.json")
    args = parser.parse_args()
    if args.rounds < 8:
        print("note: the targets are stated for --rounds 8 or more", file=sys.stderr)
    run = args.run or ROOT / "runs" / f"cpu-frontier-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [sys.executable, "-m", "wattlm", "bench", "--variants", args.variants, "--rounds", str(args.rounds)]
    command += ["--repeats", str(args.repeats), "--min-phase-s", str(args.min_phase_s), "--offline"]
    command += ["--threads", str(args.threads), "--calib-samples", str(args.calib_samples), "--out", str(run)]
    if args.model:
        command += ["--model", args.model]
    started = time.time()
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    wall_s = time.time() - started
    info = json.loads((run / "run.json").read_text())
    records = list(
        {r["variant"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}.values()
    )
    bandwidth = read_bandwidth_gb_s(args.threads)
    result = {
        "label": args.label,
        "command": " ".join(command[1:]),
        "cpu": model_name(first_processor()),
        "threads": args.threads,
        "rounds": args.rounds,
        "wall_s": wall_s,
        "energy_provenance": sorted({r.get("provenance") for r in records if r.get("provenance")}),
        "read_bandwidth_gb_s": bandwidth,
        "run": str(run),
        "config": info["config"],
        **summarise(records, info["config"], bandwidth),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("cpu", "headline", "calibration_vs_llamacpp")}, indent=2))


if __name__ == "__main__":
    main()
