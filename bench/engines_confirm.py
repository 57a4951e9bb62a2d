"""Is a decode-speed difference between GGUF files real, or this VM drifting? Interleaved rounds;
writes bench/results/engines_confirm.json.

    python bench/engines_confirm.py [--types q6_k,q8_0,q4_1] [--rounds 4]

The default model's own Q4_1 file and wattlm's exports of it (made once, with `wattlm export`'s
code) are each benchmarked as `wattlm bench --model FILE --variants gguf-source` — llama.cpp, the
same prompt (128 tokens of WikiText-2 test), 32 greedy tokens at batch 1, 3 meter windows of ≥ 3 s —
in rounds, the order rotating every round, so that a drift of the machine's speed during the run
falls on every file alike. Per round, each export's decode tokens/J is divided by the original
file's from the same round (paired ratios); the JSON gives every ratio, their median and range.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--types", default="q6_k,q8_0,q4_1")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--folder", type=Path, default=ROOT / "runs" / "engines_confirm")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engines_confirm.json")
    args = parser.parse_args()

    from wikitext_sweep import DATA

    from wattlm.bench.config import BenchConfig
    from wattlm.bench.harness import run_bench
    from wattlm.engines.export import run_export
    from wattlm.models.assets import DEFAULT_MODEL, fetch

    files = {"source (Q4_1)": fetch(DEFAULT_MODEL)}
    args.folder.mkdir(parents=True, exist_ok=True)
    for quant in args.types.split(","):
        path = args.folder / f"smollm2-{quant}.gguf"
        if not path.exists():
            run_export(None, path, quant, offline=True, threads=os.cpu_count())
        files[quant] = path
    names = list(files)
    rounds = []
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        row = {}
        for name in order:
            config = BenchConfig(
                model=str(files[name]),
                text=str(DATA / "wiki.test.tokens"),
                variants="gguf-source",
                max_tokens=512,
                kl_windows=0,
                device="cpu",
                offline=True,
            )
            out = args.folder / f"round{r}-{name.split()[0]}"
            record = run_bench(
                config,
                out=None if (out / "run.json").exists() else out,
                resume=out if (out / "run.json").exists() else None,
            ).records[0]
            d = record["decode"][0]
            row[name] = {
                "decode_tokens_per_s": d["tokens_per_s"],
                "decode_j_per_token": d["j_per_token"],
                "ppl_1_window": record["ppl"],
                "provenance": d["provenance"],
            }
            print(f"round {r} {name:14} decode {d['tokens_per_s']:6.1f} tok/s {d['j_per_token']:.4f} J/tok", flush=True)
        rounds.append({"order": order, "figures": row})
    source = names[0]
    ratios = {
        name: [rd["figures"][source]["decode_j_per_token"] / rd["figures"][name]["decode_j_per_token"] for rd in rounds]
        for name in names[1:]
    }
    summary = {
        name: {"median": statistics.median(v), "min": min(v), "max": max(v), "per_round": v}
        for name, v in ratios.items()
    }
    result = {
        "what": (
            "decode tokens/J of wattlm's GGUF exports ÷ the default model's own Q4_1 file, llama.cpp, paired per round"
        ),
        "command": f"python bench/engines_confirm.py --types {args.types} --rounds {args.rounds}",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "files": {name: str(path) for name, path in files.items()},
        "rounds": rounds,
        "decode_tokens_per_j_vs_source": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    for name, s in summary.items():
        print(
            f"{name}: {s['median']:.2f}× the source's decode tokens/J (rounds"
            f" {', '.join(f'{x:.2f}' for x in s['per_round'])})"
        )


if __name__ == "__main__":
    main()
