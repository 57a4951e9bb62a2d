"""From `wattlm bench` run folders to report rows: one flat dict per variant with the figures the
report shows, energy per million tokens through the facility model, and the recommendation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..energy.facility import Facility
from ..errors import ConfigError, InvalidInputError
from ..results import RunDir, query_energy_j
from ..units import j_to_kwh
from .select import pareto_front, recommend, stars

PHASES = ("decode", "prefill")


@dataclass(frozen=True)
class ReportOptions:
    budget_pct: float = 2.0
    facility: Facility = field(default_factory=Facility)

    def __post_init__(self) -> None:
        if not self.budget_pct >= 0:
            raise ConfigError(f"{{budget_pct}} must be ≥ 0 %, got {self.budget_pct:g}", field="budget_pct")


def parse_budget(text: str) -> float:
    """'2%', '2' or '0.5 %' → percent."""
    try:
        value = float(text.strip().removesuffix("%").strip())
    except ValueError as e:
        raise ConfigError(f"{{budget_pct}} {text!r}: give a percentage such as 2% or 0.5", field="budget_pct") from e
    if value < 0:
        raise ConfigError(f"{{budget_pct}} must be ≥ 0 %, got {text}", field="budget_pct")
    return value


def _row(record: dict[str, Any], facility: Facility) -> dict[str, Any]:
    decode = (record.get("decode") or [{}])[0]
    prefill = record.get("prefill") or {}
    paired = record.get("paired") or {}
    row = {
        "variant": record["variant"],
        "baseline": bool(record.get("baseline")),
        "status": record.get("status", "ok"),
        "error": record.get("reason") or record.get("error"),
        "ppl": record.get("ppl"),
        "delta_ppl_pct": record.get("delta_ppl_pct"),
        "kl": record.get("kl"),
        "top1_agreement": record.get("top1_agreement"),
        "prefill_j_per_token": prefill.get("j_per_token"),
        "prefill_tokens_per_s": prefill.get("tokens_per_s"),
        "prefill_provenance": prefill.get("provenance"),
        "decode_batch": decode.get("batch_size"),
        "decode_j_per_token": decode.get("j_per_token"),
        "decode_tokens_per_s": decode.get("tokens_per_s"),
        "decode_provenance": decode.get("provenance"),
        "decode_unresolved": decode.get("unresolved"),
        "ttft_s": decode.get("ttft_s"),
        "peak_memory_bytes": record.get("peak_memory_bytes"),
        "model_bytes": record.get("model_bytes"),
        "params_total": record.get("params_total"),
        "params_nonzero": record.get("params_nonzero"),
        "compression": [{"name": c.get("name"), "kernel": c.get("kernel")} for c in record.get("compression") or []],
        # bench --rounds: paired ratios to the baseline (tokens/J, > 1 better) with 95 % intervals
        "rounds": (record.get("rounds") or {}).get("count", 1),
        "prefill_tokens_per_j_interval": (paired.get("prefill") or {}).get("tokens_per_j"),
        "decode_tokens_per_j_interval": ((paired.get("decode") or [{}])[0]).get("tokens_per_j"),
        "query_energy_interval": paired.get("query_energy"),
    }
    for phase in PHASES:
        j = row[f"{phase}_j_per_token"]
        if j is None:
            row[f"{phase}_per_million_tokens"] = None
            continue
        result = facility.apply(j * 1e6)
        row[f"{phase}_per_million_tokens"] = {
            "kwh": j_to_kwh(result.facility_energy_j),
            "co2e_g": result.co2e_g,
            "cost": result.cost,
        }
    return row


def run_section(path: str | Path, options: ReportOptions) -> dict[str, Any]:
    """One run folder → its info, rows, Pareto fronts, recommendation and stars."""
    run = RunDir.open(path, kind="bench")
    records = run.records()
    if not records:
        raise InvalidInputError(
            f"{path} has no finished variant yet (results.jsonl is empty); run or resume wattlm bench first"
        )
    rows = [_row(r, options.facility) for r in run.newest("variant")]  # a retried variant's last record counts
    info = run.info
    environment = info.get("environment") or {}
    device = environment.get("gpu") or environment.get("cpu") or "?"
    ok = [r for r in rows if r["status"] == "ok" and r["delta_ppl_pct"] is not None]
    fronts = {
        phase: pareto_front(
            [
                (r["variant"], r["delta_ppl_pct"], r[f"{phase}_j_per_token"])
                for r in ok
                if r[f"{phase}_j_per_token"] is not None
            ]
        )
        for phase in PHASES
    }
    protocol = info.get("protocol") or {}
    config = info.get("config") or {}
    query_tokens = (config.get("prompt_len") or 0, config.get("new_tokens") or 0)
    query_j = {
        r["variant"]: query_energy_j(*query_tokens, r["prefill_j_per_token"], r["decode_j_per_token"]) for r in ok
    }
    wh_per_1000 = {name: 1000 * j / 3600 for name, j in query_j.items() if j is not None}
    return {
        "path": str(Path(path)),
        "label": f"{Path(path).name} ({environment.get('device', '?')}: {device})",
        "model": info.get("model"),
        "text": info.get("text"),
        "protocol": protocol,
        "environment": environment,
        "skipped_lines": run.skipped_lines,
        "rows": rows,
        "pareto": fronts,
        "recommendation": {phase: recommend(rows, options.budget_pct, f"{phase}_j_per_token") for phase in PHASES},
        "query": {"prompt_tokens": query_tokens[0], "new_tokens": query_tokens[1]},
        "wh_per_1000_queries": wh_per_1000,
        "stars": stars(wh_per_1000),
        "provenance": sorted({r[f"{p}_provenance"] for r in rows for p in PHASES if r[f"{p}_provenance"]}),
    }


def build_report(paths: list[str | Path], options: ReportOptions) -> dict[str, Any]:
    if not paths:
        raise InvalidInputError("give at least one wattlm bench run folder")
    carbon = options.facility.carbon
    assert carbon is not None
    return {
        "schema": "wattlm.report/1",
        "budget_pct": options.budget_pct,
        "facility": {"pue": options.facility.pue, "method": "cooling" if options.facility.cooling else "pue"},
        "carbon": carbon.to_dict(),
        "currency": options.facility.currency if options.facility.price_per_kwh is not None else None,
        "rating": (
            "stars on a fixed scale of Wh per 1,000 queries: 5 below 1, 4 below 3.16, 3 below 10, 2 below 31.6,"
            " 1 above; a query is the run's prompt and generated tokens at batch 1 (prefill + decode J/token)"
        ),
        "runs": [run_section(p, options) for p in paths],
    }
