"""The report of `wattlm load` runs: one row per load level (throughput, latency percentiles,
goodput, J per output token / request / goodput request, goodput requests per kWh through the
facility model), the energy–latency trade-off curve of every run on one figure, and a
recommendation: the run and level with the lowest J per goodput request among the levels that
meet the SLOs (at least `ATTAINMENT` of their measured requests within every SLO).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..results import RunDir
from ..units import j_to_kwh
from .data import ReportOptions
from .table import Row, html_page, markdown_page

ATTAINMENT = 0.9
COLUMNS = [  # (title, key, format)
    ("done/sent", "done", "s"),
    ("tok/s", "output_tokens_per_s", ".4g"),
    ("TTFT p50 s", "ttft_p50", ".3g"),
    ("TTFT p99 s", "ttft_p99", ".3g"),
    ("TPOT p50 s", "tpot_p50", ".3g"),
    ("TPOT p99 s", "tpot_p99", ".3g"),
    ("SLO met", "slo_attainment", ".0%"),
    ("goodput/s", "goodput_per_s", ".3g"),
    ("W", "avg_power_w", ".4g"),
    ("J/token", "j_per_output_token", ".3g"),
    ("J/request", "j_per_request", ".3g"),
    ("J/good req", "j_per_good_request", ".3g"),
    ("good req/kWh", "good_per_kwh", ",.0f"),
]


def _row(record: dict[str, Any], options: ReportOptions) -> dict[str, Any]:
    j_good = record.get("j_per_good_request")
    facility_j = options.facility.apply(j_good).facility_energy_j if j_good else None
    return {
        "level": record["level"],
        "value": record["value"],
        "status": record["status"],
        "reason": record.get("reason", ""),
        "done": f"{record['requests_completed']}/{record['requests_sent']}",
        "truncated": record["requests_truncated"],
        "output_tokens_per_s": record["output_tokens_per_s"],
        "ttft_p50": record["ttft_s"]["p50"],
        "ttft_p99": record["ttft_s"]["p99"],
        "tpot_p50": record["tpot_s"]["p50"],
        "tpot_p99": record["tpot_s"]["p99"],
        "slo_attainment": record.get("slo_attainment"),
        "goodput_per_s": record["goodput_per_s"],
        "avg_power_w": record.get("avg_power_w"),
        "j_per_output_token": record.get("j_per_output_token"),
        "j_per_request": record.get("j_per_request"),
        "j_per_good_request": j_good,
        "good_per_kwh": 1.0 / j_to_kwh(facility_j) if facility_j else None,
        "provenance": record.get("provenance") or "none",
    }


def load_section(path: str | Path, options: ReportOptions) -> dict[str, Any]:
    run = RunDir.open(path, kind="load")
    newest = run.newest("level")
    if not newest:
        raise InvalidInputError(f"{path} has no finished load level yet; run or resume it first")
    server = run.info.get("server", {})
    config = run.info.get("config", {})
    return {
        "label": Path(path).name,
        "path": str(path),
        "server": server.get("url"),
        "model": server.get("model"),
        "version": server.get("version", {}),
        "cpu": run.info.get("environment", {}).get("cpu"),
        "slo": config.get("slo", {}),
        "mode": "rate" if config.get("rates") else "concurrency",
        "rows": [_row(r, options) for r in newest],
    }


def recommend(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Lowest J per goodput request among ok levels that meet the SLOs."""
    candidates = [
        (row["j_per_good_request"], run["label"], row)
        for run in runs
        for row in run["rows"]
        if row["status"] == "ok"
        and row["j_per_good_request"] is not None
        and (row["slo_attainment"] or 0.0) >= ATTAINMENT
    ]
    if not candidates:
        return None
    j, label, row = min(candidates, key=lambda c: c[0])
    return {"run": label, "level": row["level"], "j_per_good_request": j, "slo_attainment": row["slo_attainment"]}


def build_load_report(paths: list[str | Path], options: ReportOptions) -> dict[str, Any]:
    runs = [load_section(p, options) for p in paths]
    carbon = options.facility.carbon
    return {
        "kind": "load",
        "runs": runs,
        "recommendation": recommend(runs),
        "attainment": ATTAINMENT,
        "facility": {"pue": options.facility.pue},
        "carbon": None if carbon is None else {"region": carbon.region, "g_per_kwh": carbon.g_per_kwh},
    }


def figure(report: dict[str, Any], png: Path) -> str:
    """J per output token against output tok/s (the trade-off curve), and TTFT/TPOT p99 against load."""
    import matplotlib

    from .plots import _finish

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "wattlm"
    fig, (curve, latency) = plt.subplots(1, 2, figsize=(11.0, 4.2), dpi=110)
    for run in report["runs"]:
        rows = [r for r in run["rows"] if r["j_per_output_token"] is not None]
        line = curve.plot([r["output_tokens_per_s"] for r in rows], [r["j_per_output_token"] for r in rows], marker="o")
        for r in rows:
            curve.annotate(r["level"], (r["output_tokens_per_s"], r["j_per_output_token"]), fontsize=7)
        colour = line[0].get_color()
        values = [r["value"] for r in run["rows"]]
        latency.plot(
            values, [r["ttft_p99"] for r in run["rows"]], marker="o", color=colour, label=f"{run['label']} TTFT"
        )
        latency.plot(
            values,
            [r["tpot_p99"] for r in run["rows"]],
            marker="s",
            ls="--",
            color=colour,
            label=f"{run['label']} TPOT",
        )
        line[0].set_label(run["label"])
    curve.set(xlabel="output tokens/s", ylabel="J per output token", title="energy against throughput")
    curve.legend(fontsize=7)
    modes = {run["mode"] for run in report["runs"]}
    latency.set(
        xlabel="requests/s" if modes == {"rate"} else ("concurrency" if modes == {"concurrency"} else "load level"),
        ylabel="p99 latency (s)",
        title="TTFT and TPOT p99",
        yscale="log",
    )
    latency.legend(fontsize=7)
    return _finish(fig, png)


def _context(report: dict[str, Any]) -> list[str]:
    lines = []
    for run in report["runs"]:
        slo = ", ".join(f"{k} ≤ {v:g} s" for k, v in run["slo"].items()) or "none (goodput = completed, untruncated)"
        lines.append(f"{run['label']}: {run['model']} at {run['server']} on {run['cpu']}; SLOs: {slo}")
    lines.append(
        "J/token: energy of each measured window ÷ output tokens that arrived inside it; J/request and J/good req:"
        " ÷ requests completed (and meeting every SLO) inside it; good req/kWh at PUE"
        f" {report['facility']['pue']:g}."
    )
    rec = report["recommendation"]
    if rec:
        lines.append(
            f"Recommended: {rec['run']} at {rec['level']} — {rec['j_per_good_request']:.3g} J per goodput request,"
            f" {rec['slo_attainment']:.0%} of requests within the SLOs."
        )
    else:
        lines.append(f"No level met the SLOs for {report['attainment']:.0%} of its requests: no recommendation.")
    return lines


def _rows(report: dict[str, Any]) -> list[Row]:
    return [
        Row((run["label"], r["level"], r["status"] + (f" ({r['reason']})" if r["reason"] else "")), r, r["provenance"])
        for run in report["runs"]
        for r in run["rows"]
    ]


LEAD = ("run", "level", "status")


def load_markdown(report: dict[str, Any], image: str | None) -> str:
    alt = "energy against throughput, latency against load"
    return markdown_page("wattlm load report", _context(report), LEAD, COLUMNS, _rows(report), image, alt)


def load_html(report: dict[str, Any], svg: str | None) -> str:
    return html_page("wattlm load report", _context(report), LEAD, COLUMNS, _rows(report), svg, "energy and latency")
