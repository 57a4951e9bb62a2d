"""`wattlm plan infer` against published serving measurements (bench/data/serving_measurements.csv).

For every row: the plan for the row's model (bench/data/model_configs/), device, batch, lengths,
precision and engine mode, through the public API (wattlm.plan.plan_infer) as the CLI runs it; the
error ln(predicted / measured) of J per output token for the central case, and whether the
measurement lies inside the plan's range. A batch larger than the key/value cache holds (an engine's
max batch that its memory never reaches) is planned at the largest that fits, and the row says so.

Rows marked as calibration (batch-1 rows, from which the memory-bound power share was read) are
reported apart from the held-out rows.

    python bench/plan_validation.py                     # table + bench/results/plan_validation.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

from wattlm.plan import InferRequest, lookup, plan_infer
from wattlm.plan.architecture import load_config
from wattlm.plan.serving import Workload, max_batch

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "serving_measurements.csv"
CONFIGS = HERE / "data" / "model_configs"
TARGET_MEDIAN_LN = 0.2
TARGET_IN_RANGE = 0.7


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def calibration_row(row: dict[str, str]) -> bool:
    return row["id"].startswith("argonne-") and row["batch"] == "1"


def predict(row: dict[str, str]) -> dict:
    config = CONFIGS / f"{row['model_config']}.json"
    hw = lookup(row["hardware"])
    batch, prompt, output = int(row["batch"]), int(row["prompt_tokens"]), int(row["output_tokens"])
    devices = int(row["devices"])
    work = Workload(
        batch=batch, prompt_tokens=prompt, output_tokens=output, devices=devices, precision=row["precision"]
    )
    largest = max_batch(load_config(config), hw, work)
    planned = min(batch, largest) if largest is not None else batch
    plan = plan_infer(
        InferRequest(
            hardware=row["hardware"],
            model_config=config,
            batch=planned,
            prompt_tokens=prompt,
            output_tokens=output,
            devices=devices,
            precision=row["precision"],
            chunked_prefill=row["chunked_prefill"] == "yes",
        )
    )
    s = plan["scenarios"]
    measured = float(row["measured_j_per_output_token"])
    central = s["central"]["j_per_output_token"]
    low, high = s["low_energy"]["j_per_output_token"], s["high_energy"]["j_per_output_token"]

    def number(key: str) -> float | None:
        return float(row[key]) if row.get(key) else None

    return {
        "id": row["id"],
        "calibration": calibration_row(row),
        "model": row["model_config"],
        "hardware": row["hardware"],
        "engine": row["engine"],
        "batch": batch,
        "planned_batch": planned,
        "measured_j_per_output_token": measured,
        "predicted_j_per_output_token": central,
        "range": [low, high],
        "ln_ratio": math.log(central / measured),
        "in_range": low <= measured <= high,
        "measured_output_tokens_per_s": number("measured_output_tokens_per_s"),
        "predicted_output_tokens_per_s": s["central"]["output_tokens_per_s"],
        "measured_power_w": number("measured_power_w"),
        "predicted_power_w": s["central"]["power_w"],
        "source": row["source"],
    }


def summary(results: list[dict]) -> dict:
    if not results:
        return {"rows": 0}
    errors = [abs(r["ln_ratio"]) for r in results]
    return {
        "rows": len(results),
        "median_abs_ln_ratio": statistics.median(errors),
        "mean_ln_ratio": statistics.fmean(r["ln_ratio"] for r in results),
        "in_range": sum(r["in_range"] for r in results) / len(results),
        "within_22_percent": sum(e <= TARGET_MEDIAN_LN for e in errors) / len(results),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "plan_validation.json")
    args = parser.parse_args()
    results = [predict(row) for row in rows(args.data)]
    print(f"{'row':50s} {'measured':>9s} {'plan':>9s} {'range':>17s} {'ln':>6s}  in")
    for r in results:
        low, high = r["range"]
        mark = "*" if r["calibration"] else " "
        capped = f" (batch {r['planned_batch']})" if r["planned_batch"] != r["batch"] else ""
        print(
            f"{r['id'][:49]:49s}{mark} {r['measured_j_per_output_token']:9.3g} {r['predicted_j_per_output_token']:9.3g}"
            f" [{low:7.3g},{high:7.3g}] {r['ln_ratio']:+6.2f}  {'yes' if r['in_range'] else 'NO'}{capped}"
        )
    groups = {
        "all": results,
        "held_out": [r for r in results if not r["calibration"]],
        "calibration": [r for r in results if r["calibration"]],
    }
    sources = sorted({r["id"].split("-")[0] for r in results})
    for source in sources:
        groups[f"source:{source}"] = [r for r in results if r["id"].split("-")[0] == source]
    summaries = {name: summary(group) for name, group in groups.items()}
    print("\n* calibration row (its batch-1 power set the memory-bound share)")
    for name, s in summaries.items():
        if s["rows"]:
            print(
                f"{name:22s} {s['rows']:3d} rows  median |ln| {s['median_abs_ln_ratio']:.3f}  mean ln"
                f" {s['mean_ln_ratio']:+.3f}  in range {s['in_range']:.0%}  within 22 % {s['within_22_percent']:.0%}"
            )
    held = summaries["held_out"]
    met = held["median_abs_ln_ratio"] <= TARGET_MEDIAN_LN and held["in_range"] >= TARGET_IN_RANGE
    print(
        f"targets (held-out rows): median |ln| ≤ {TARGET_MEDIAN_LN} and ≥ {TARGET_IN_RANGE:.0%} in range:"
        f" {'met' if met else 'missed'}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "data": str(args.data.relative_to(HERE.parent) if args.data.is_relative_to(HERE.parent) else args.data),
        "targets": {"median_abs_ln_ratio": TARGET_MEDIAN_LN, "in_range": TARGET_IN_RANGE, "met_on_held_out": met},
        "summary": summaries,
        "rows": results,
    }
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
