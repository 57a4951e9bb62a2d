"""The default sweep's wall time and harness overhead; writes bench/results/default_sweep.json.

    python bench/default_sweep.py [--out FILE] [-- extra wattlm bench options]

Runs `wattlm bench --offline` (after `wattlm fetch`, so the download is not timed) exactly as a user
would, in a subprocess, and reports:
* wall time of the whole command, model load included (target: ≤ 300 s on the project's 2-core VM);
* harness overhead per variant: the largest, over its phases, share of the metered window time not
  spent inside the measured calls (meter edges, loop bookkeeping; target: ≤ 2 %);
* each variant's headline figures, so the JSON shows what was measured and how (provenance).

With `--wikitext`, it instead scores the default model in fp32 on the first 64 windows of 512
tokens of ../shared/data/wikitext-2/wiki.test.tokens (one short phase each; perplexity is the point).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2" / "wiki.test.tokens"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--wikitext", action="store_true")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / ("wikitext_ppl.json" if args.wikitext else "default_sweep.json")

    wattlm = [sys.executable, "-m", "wattlm"]
    subprocess.run([*wattlm, "fetch"], check=True, capture_output=True)
    options = ["--offline", *args.extra]
    if args.wikitext:
        options += [
            "--text",
            str(WIKITEXT),
            "--variants",
            "fp32",
            "--max-tokens",
            "32768",
            "--kl-windows",
            "0",
            "--repeats",
            "1",
            "--min-phase-s",
            "0.5",
        ]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        start = time.perf_counter()
        proc = subprocess.run([*wattlm, "bench", *options, "--out", str(run), "--json"], capture_output=True, text=True)
        wall_s = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"wattlm bench failed ({proc.returncode}): {proc.stderr[-2000:]}")
        records = json.loads(proc.stdout)
        info = json.loads((run / "run.json").read_text())

    variants = []
    for r in records:
        phases = {"eval": r["eval"], "prefill": r["prefill"], **{f"decode_b{d['batch_size']}": d for d in r["decode"]}}
        variants.append(
            {
                "variant": r["variant"],
                "ppl": r["ppl"],
                "delta_ppl_pct": r["delta_ppl_pct"],
                "kl": r["kl"],
                "prefill_tokens_per_s": r["prefill"]["tokens_per_s"],
                "prefill_j_per_token": r["prefill"]["j_per_token"],
                "decode": [
                    {k: d[k] for k in ("batch_size", "tokens_per_s", "j_per_token", "ttft_s")} for d in r["decode"]
                ],
                "peak_memory_bytes": r["peak_memory_bytes"],
                "provenance": r["provenance"],
                "harness_overhead_pct": {name: 100 * p.get("overhead", 0.0) for name, p in phases.items()},
            }
        )
    worst = max(max(v["harness_overhead_pct"].values()) for v in variants)
    result = {
        "what": "wikitext-2 test perplexity, default model, fp32" if args.wikitext else "wattlm bench default sweep",
        "command": "wattlm bench " + " ".join(options),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": info["environment"]["cpu"]},
        "model": info["model"],
        "protocol": info["protocol"],
        "wall_s_including_load": wall_s,
        "target_wall_s": 300,
        "wall_target_met": wall_s <= 300,
        "max_harness_overhead_pct": worst,
        "target_overhead_pct": 2.0,
        "overhead_target_met": worst <= 2.0,
        "variants": variants,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("what", "wall_s_including_load", "max_harness_overhead_pct")}, indent=2))
    for v in variants:
        print(v["variant"], f"ppl {v['ppl']:.4g}", f"prefill {v['prefill_j_per_token']:.3g} J/tok", v["decode"])


if __name__ == "__main__":
    main()
