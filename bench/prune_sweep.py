"""Pruning and parameter sharing on the default model; writes bench/results/prune_sweep.json.

    python bench/prune_sweep.py [--out FILE] [--windows 16] [--variants LIST] [--calib-samples 32]

One `wattlm bench` run (in process): WikiText-2 test, 512-token windows, calibration on WikiText-2
valid, every variant through the same meter windows, phases and quality code. Unstructured and 2:4
sparsity run on the dense kernels (no sparse kernel is used), so their speed is reported as measured:
the point of those rows is quality at a given sparsity, and that they are not faster.

Targets: Wanda and SparseGPT at 50 % ≤ 1.6× dense ppl, each with ΔPPL ≤ 1/3 of
magnitude's; structured removal of 25 % of the parameters ≥ 1.25× decode tokens/J (at the ppl it
reaches, reported).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = (
    "fp32,magnitude50,l2shrink50,wanda50,sparsegpt50,taylor50,magnitude-2:4,wanda-2:4,sparsegpt-2:4,taylor-2:4,"
    "struct20,struct25,struct30,struct20-layers,struct25-layers,struct30-layers,share2,wanda50+int8"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prune_sweep.json")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--variants", default=VARIANTS)
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--min-phase-s", type=float, default=3.0)
    parser.add_argument(
        "--run", type=Path, default=ROOT / "runs" / "prune_sweep", help="run folder; an existing one is resumed"
    )
    args = parser.parse_args()

    from wikitext_sweep import run_wikitext

    result, info, wall_s, resumed = run_wikitext(
        args.variants,
        windows=args.windows,
        calib_samples=args.calib_samples,
        min_phase_s=args.min_phase_s,
        run=args.run,
    )

    fp32 = next(r for r in result.records if r["variant"] == "fp32")
    rows = []
    for r in result.records:
        d = r["decode"][0]
        rows.append(
            {
                "variant": r["variant"],
                "ppl": r["ppl"],
                "ppl_vs_dense": r["ppl"] / fp32["ppl"],
                "delta_ppl_pct": r["delta_ppl_pct"],
                "kl": r["kl"],
                "params_total": r["params_total"],
                "params_nonzero": r["params_nonzero"],
                "model_bytes": r["model_bytes"],
                "prefill_tokens_per_s": r["prefill"]["tokens_per_s"],
                "prefill_j_per_token": r["prefill"]["j_per_token"],
                "decode_tokens_per_s": d["tokens_per_s"],
                "decode_j_per_token": d["j_per_token"],
                "decode_tokens_per_j_vs_fp32": fp32["decode"][0]["j_per_token"] / d["j_per_token"],
                "peak_memory_bytes": r["peak_memory_bytes"],
                "build_s": r["build_s"],
                "provenance": r["provenance"],
                "compression": [
                    {
                        "name": c["name"],
                        "kernel": c["kernel"],
                        "details": {k: v for k, v in c["details"].items() if k != "layer_scores"},
                    }
                    for c in r.get("compression", [])
                ],
            }
        )
    by = {row["variant"]: row for row in rows}

    def target(name, ok, detail):
        return {"target": name, "met": ok, "detail": detail}

    targets = []
    for kind in ("50", "-2:4"):
        magnitude = by.get(f"magnitude{kind}")
        for method in ("wanda", "sparsegpt"):
            row = by.get(f"{method}{kind}")
            if row is None:
                continue
            if kind == "50":
                targets.append(
                    target(
                        f"{method}50 ppl ≤ 1.6× dense",
                        row["ppl_vs_dense"] <= 1.6,
                        f"{row['ppl_vs_dense']:.3f}× ({row['ppl']:.2f} vs {fp32['ppl']:.2f})",
                    )
                )
            if magnitude is not None:
                ratio = magnitude["delta_ppl_pct"] / row["delta_ppl_pct"] if row["delta_ppl_pct"] > 0 else float("inf")
                targets.append(
                    target(
                        f"{method}{kind} ΔPPL ≥ 3× smaller than magnitude{kind}'s",
                        ratio >= 3,
                        f"{row['delta_ppl_pct']:+.1f} % vs {magnitude['delta_ppl_pct']:+.1f} % ({ratio:.1f}×)",
                    )
                )
    for name in ("struct25", "struct25-layers"):
        if name in by:
            row = by[name]
            targets.append(
                target(
                    f"{name} decode ≥ 1.25× fp32 tokens/J",
                    row["decode_tokens_per_j_vs_fp32"] >= 1.25,
                    f"{row['decode_tokens_per_j_vs_fp32']:.2f}× at ppl {row['ppl']:.2f} ({row['delta_ppl_pct']:+.1f}"
                    f" %), {1 - row['params_total'] / fp32['params_total']:.1%} of the parameters removed",
                )
            )
    out = {
        "what": (
            "pruning and sharing variants of the default model (SmolLM2-135M-Instruct, Q4_1 GGUF de-quantized to fp32),"
            " WikiText-2 test"
        ),
        "note": (
            "no recovery fine-tuning; lm_head (tied to the embedding) is never pruned; unstructured and N:M sparsity"
            " run on dense kernels, so their tok/s and J/token are the dense model's within noise. Energy on this VM is"
            " estimated from CPU time (see provenance)."
        ),
        "command": f"python bench/prune_sweep.py --windows {args.windows} --calib-samples {args.calib_samples}",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": info["environment"]["cpu"]},
        "protocol": info["protocol"],
        "calibration": info["calibration"],
        "wall_s_this_invocation": wall_s,
        "resumed": resumed,
        "variants": rows,
        "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    for row in rows:
        print(
            f"{row['variant']:18} ppl {row['ppl']:8.2f} {row['delta_ppl_pct']:+8.2f}%  params"
            f" {row['params_total'] / 1e6:6.1f}M nz {row['params_nonzero'] / 1e6:6.1f}M  decode"
            f" {row['decode_tokens_per_s']:6.1f} tok/s {row['decode_j_per_token']:.3f} J/tok"
            f" ({row['decode_tokens_per_j_vs_fp32']:.2f}×)  prefill {row['prefill_tokens_per_s']:6.0f} tok/s"
        )
    for t in targets:
        print(("MET   " if t["met"] else "MISSED"), t["target"], t["detail"])


if __name__ == "__main__":
    main()
