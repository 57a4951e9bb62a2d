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
    ("req J p50", "request_j_p50", ".3g"),
    ("req J p90", "request_j_p90", ".3g"),
]
MAX_POINTS = 2000  # requests per run on the per-request figure


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
        "request_j_p50": ((record.get("request_energy") or {}).get("energy_per_request_j") or {}).get("p50"),
        "request_j_p90": ((record.get("request_energy") or {}).get("energy_per_request_j") or {}).get("p90"),
        "price_list": (record.get("request_energy") or {}).get("price_list"),
    }


def _points(run: RunDir, newest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each measured request with its whole energy: (prompt tokens, output tokens, J), for the figure."""
    attempts = {r.get("requests_attempt") for r in newest if r.get("requests_attempt")}
    points = [
        {"level": r["level"], "prompt": r["prompt_tokens"], "output": r["output_tokens"], "j": r["energy_j"]}
        for r in run.requests()
        if r.get("attempt") in attempts and r.get("measured") and r.get("energy_status") == "ok"
    ]
    return points[:MAX_POINTS]


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
        "requests": _points(run, newest),
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
    with_requests = any(run["requests"] for run in report["runs"])
    if with_requests:
        fig, axes = plt.subplots(2, 2, figsize=(11.0, 8.4), dpi=110)
        (curve, latency), (by_prompt, by_output) = axes
        _per_request(report, by_prompt, by_output)
    else:
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


def _per_request(report: dict[str, Any], by_prompt: Any, by_output: Any) -> None:
    """Energy per request against prompt and output length, each level with its price-list line (the
    other length held at the level's mean)."""
    for run in report["runs"]:
        for row in run["rows"]:
            pts = [p for p in run["requests"] if p["level"] == row["level"]]
            if not pts:
                continue
            label = f"{run['label']} {row['level']}" if len(report["runs"]) > 1 else row["level"]
            dots = by_prompt.scatter([p["prompt"] for p in pts], [p["j"] for p in pts], s=6, alpha=0.5, label=label)
            by_output.scatter(
                [p["output"] for p in pts], [p["j"] for p in pts], s=6, alpha=0.5, color=dots.get_facecolor()[0]
            )
            fit = row.get("price_list")
            if not fit or fit.get("alpha_j") is None:
                continue
            beta, gamma = fit.get("beta_j_per_prompt_token") or 0.0, fit.get("gamma_j_per_output_token") or 0.0
            mp = sum(p["prompt"] for p in pts) / len(pts)
            mo = sum(p["output"] for p in pts) / len(pts)
            for ax, key, slope, other in (
                (by_prompt, "prompt", beta, gamma * mo),
                (by_output, "output", gamma, beta * mp),
            ):
                xs = sorted({min(p[key] for p in pts), max(p[key] for p in pts)})
                ax.plot(xs, [fit["alpha_j"] + other + slope * x for x in xs], color=dots.get_facecolor()[0], lw=1)
    by_prompt.set(xlabel="prompt tokens", ylabel="J per request", title="energy per request by prompt length")
    by_output.set(xlabel="output tokens", ylabel="J per request", title="energy per request by output length")
    by_prompt.legend(fontsize=7)


def _price(fit: dict[str, Any] | None) -> str:
    if not fit or fit.get("alpha_j") is None:
        return "too few requests for a price list"
    parts = [f"{fit['alpha_j']:.3g} J"]
    for key, unit in (("beta_j_per_prompt_token", "prompt token"), ("gamma_j_per_output_token", "output token")):
        if fit.get(key) is not None:
            ci = fit.get("interval95", {}).get(key)
            span = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""
            parts.append(f"{fit[key]:.3g}{span} J per {unit}")
    return " + ".join(parts) + (f" ({'; '.join(fit['not_priced'])})" if fit.get("not_priced") else "")


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
    for run in report["runs"]:
        for row in run["rows"]:
            if row.get("price_list") is not None or row.get("request_j_p50") is not None:
                lines.append(f"Price list, {run['label']} {row['level']}: J ≈ {_price(row.get('price_list'))}.")
    if any(r.get("request_j_p50") is not None for run in report["runs"] for r in run["rows"]):
        lines.append(
            "req J: each request's share of the level's metered energy, split along its timeline"
            " (docs/ledger.md#the-method-splitting-energy-along-request-timelines); the price list is fitted"
            " over those shares, with 95 % bootstrap intervals."
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
