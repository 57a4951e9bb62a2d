"""The report of a `wattlm sweep` run: per configuration and load level, the ML.ENERGY benchmark's
columns (J per output token, J per request, output tok/s, median and p90 ITL, average power) as the
median over rounds with a 95 % bootstrap interval; the energy–latency front; and the choice — the
configuration and level with the lowest J per request among those meeting the SLO in every round,
with its saving against the server's default configuration at the same level (paired over rounds).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..intervals import bootstrap_median, paired_ratio
from ..results import RunDir
from .data import ReportOptions
from .table import Row, html_page, markdown_page

COLUMNS = [  # (title, key, format) — medians over rounds
    ("rounds ok", "rounds", "s"),
    ("J/output tok", "j_per_output_token", ".3g"),
    ("J/request", "j_per_request", ".3g"),
    ("J/request 95 %", "j_per_request_ci", "s"),
    ("output tok/s", "output_tokens_per_s", ".4g"),
    ("ITL p50 ms", "itl_p50_ms", ".3g"),
    ("ITL p90 ms", "itl_p90_ms", ".3g"),
    ("TTFT p90 s", "ttft_p90_s", ".3g"),
    ("avg W", "avg_power_w", ".4g"),
    ("SLO", "slo", "s"),
]
LEAD = ("configuration", "level")
KEYS = ("j_per_output_token", "j_per_request", "output_tokens_per_s", "itl_p50_s", "itl_p90_s", "ttft_p90_s",
        "ttft_p50_s", "avg_power_w")  # fmt: skip


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _row(config_id: str, level: str, lines: list[dict[str, Any]], slo: dict[str, float]) -> dict[str, Any]:
    ok = [r for r in lines if r["status"] == "ok"]
    row: dict[str, Any] = {
        "config_id": config_id,
        "config": lines[0]["config"],
        "default": lines[0].get("default", False),
        "level": level,
        "value": lines[0]["value"],
        "rounds": f"{len(ok)}/{len(lines)}",
        "rounds_ok": len(ok),
        "rounds_total": len(lines),
        "provenance": ok[0].get("provenance") if ok else "none",
        "reasons": sorted({r["reason"] for r in lines if r["status"] != "ok" and r.get("reason")}),
        "per_round": {str(r["round"]): r.get("j_per_request") for r in ok},
    }
    for key in KEYS:
        row[key] = _median([r.get(key) for r in ok])
    j = [r["j_per_request"] for r in ok if r.get("j_per_request")]
    ci = bootstrap_median(j) if j else None
    row["j_per_request_interval"] = None if ci is None else ci.to_dict()
    row["j_per_request_ci"] = "—" if ci is None or ci.low is None else f"[{ci.low:.3g}, {ci.high:.3g}]"
    row["itl_p50_ms"] = None if row["itl_p50_s"] is None else row["itl_p50_s"] * 1000
    row["itl_p90_ms"] = None if row["itl_p90_s"] is None else row["itl_p90_s"] * 1000
    # the SLO is met when every round ran and met it (each round's percentiles against the limits)
    met = bool(ok) and len(ok) == len(lines) and all(r.get("slo_met") for r in lines)
    row["slo_met"] = met
    row["slo"] = ("met" if met else "missed") if slo else "—"
    return row


def _front(rows: list[dict[str, Any]]) -> list[str]:
    """Configurations × levels no other beats on both J per request and median ITL."""
    pts = [r for r in rows if r["j_per_request"] is not None and r["itl_p50_s"] is not None]
    front = []
    for r in pts:
        beaten = any(
            o is not r
            and o["j_per_request"] <= r["j_per_request"]
            and o["itl_p50_s"] <= r["itl_p50_s"]
            and (o["j_per_request"] < r["j_per_request"] or o["itl_p50_s"] < r["itl_p50_s"])
            for o in pts
        )
        if not beaten:
            front.append(f"{r['config_id']} @ {r['level']}")
    return front


def recommend(rows: list[dict[str, Any]], lines: list[dict[str, Any]], slo: dict[str, float]) -> dict[str, Any]:
    candidates = [r for r in rows if r["j_per_request"] is not None and (r["slo_met"] or not slo)]
    if not candidates:
        return {"chosen": None, "why": "no configuration met the SLO in every round" if slo else "nothing measured"}
    best = min(candidates, key=lambda r: r["j_per_request"])
    out: dict[str, Any] = {
        "chosen": best["config_id"],
        "config": best["config"],
        "level": best["level"],
        "j_per_request": best["j_per_request"],
        "j_per_output_token": best["j_per_output_token"],
        "itl_p50_s": best["itl_p50_s"],
        "interval": best["j_per_request_interval"],
    }
    base = next((r for r in rows if r["default"] and r["level"] == best["level"]), None)
    if base is None or base["j_per_request"] is None:
        out["saving"] = None
        out["saving_note"] = "the server's default configuration was not measured (or failed) at this level"
        return out
    rounds = sorted({int(k) for k in best["per_round"]} | {int(k) for k in base["per_round"]})
    ratio = paired_ratio(
        [best["per_round"].get(str(k)) for k in rounds], [base["per_round"].get(str(k)) for k in rounds]
    )
    out["default"] = base["config_id"]
    out["default_j_per_request"] = base["j_per_request"]
    out["default_slo_met"] = base["slo_met"]
    if ratio is not None:
        out["ratio"] = ratio.to_dict()
        out["saving"] = 1.0 - ratio.median
        out["saving_interval"] = None if ratio.low is None else [1.0 - ratio.high, 1.0 - ratio.low]  # type: ignore[operator]
    else:
        out["saving"] = None
    return out


def build_sweep_report(paths: list[str | Path], options: ReportOptions) -> dict[str, Any]:
    if len(paths) != 1:
        raise InvalidInputError("report one sweep run at a time")
    run = RunDir.open(paths[0], kind="sweep")
    lines = run.records()
    if not lines:
        raise InvalidInputError(f"{paths[0]} has no finished configuration yet; run or resume the sweep first")
    sweep = run.info["sweep"]
    slo = sweep.get("slo") or {}
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        grouped[(line["config_id"], line["level"])].append(line)
    order = [c["id"] for c in run.info.get("configurations", [])]
    rows = [_row(cid, level, group, slo) for (cid, level), group in grouped.items()]
    rows.sort(key=lambda r: (order.index(r["config_id"]) if r["config_id"] in order else len(order), r["value"]))
    return {
        "kind": "sweep",
        "run": str(paths[0]),
        "server": sweep["server"],
        "model": sweep.get("model"),
        "grid": sweep["grid"],
        "slo": slo,
        "rounds": sweep.get("rounds", 1),
        "load": {
            k: sweep["load"].get(k) for k in ("concurrencies", "rates", "requests", "window", "input_len", "output_len")
        },  # fmt: skip
        "cpu": run.info.get("environment", {}).get("cpu"),
        "rows": rows,
        "front": _front(rows),
        "recommendation": recommend(rows, lines, slo),
    }


def figure(report: dict[str, Any], png: Path) -> str:
    """J per request against median ITL, one point per configuration and level, the SLO's ITL limit."""
    import matplotlib

    from .plots import _finish

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "wattlm"
    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=110)
    levels = sorted({r["level"] for r in report["rows"]})
    for level in levels:
        rows = [r for r in report["rows"] if r["level"] == level and r["itl_p50_ms"] and r["j_per_request"]]
        ax.scatter([r["itl_p50_ms"] for r in rows], [r["j_per_request"] for r in rows], label=level)
        for r in rows:
            ax.annotate(r["config_id"], (r["itl_p50_ms"], r["j_per_request"]), fontsize=7)
    limit = report["slo"].get("itl_p50")
    if limit:
        ax.axvline(limit * 1000, ls="--", color="grey", lw=1, label=f"SLO ITL p50 ≤ {limit * 1000:g} ms")
    rec = report["recommendation"]
    if rec.get("chosen"):
        ax.scatter([rec["itl_p50_s"] * 1000], [rec["j_per_request"]], s=160, facecolors="none", edgecolors="red",
                   label="chosen")  # fmt: skip
    ax.set(xlabel="median inter-token latency (ms)", ylabel="J per request", title="energy against latency")
    ax.legend(fontsize=7)
    return _finish(fig, png)


def _context(report: dict[str, Any]) -> list[str]:
    load = report["load"]
    what = (
        f"{'concurrency ' + ','.join(f'{v:g}' for v in load['concurrencies']) if load['concurrencies'] else ''}"
        f"{'rate ' + ','.join(f'{v:g}' for v in load['rates']) if load['rates'] else ''}"
    )
    lines = [
        f"server: {report['server']}; model: {report['model']}; CPU: {report['cpu']}",
        "grid: " + "; ".join(f"{k} = {', '.join(v)}" for k, v in report["grid"].items()),
        f"load: {what}, {load['requests']} requests a level, {load['input_len']} prompt / {load['output_len']} output"
        f" tokens, {load['window']} window; {report['rounds']} round(s), configurations in rotating order",
        "SLO: " + (", ".join(f"{k} ≤ {v:g} s" for k, v in report["slo"].items()) or "none"),
        "Figures: medians over rounds; J/request 95 %: bootstrap interval of the median.",
        "Energy–latency front: " + ("; ".join(report["front"]) or "—"),
    ]
    rec = report["recommendation"]
    if rec.get("chosen") is None:
        lines.append(f"No choice: {rec['why']}.")
        return lines
    text = (
        f"Chosen: {rec['chosen']} at {rec['level']} — {rec['j_per_request']:.3g} J per request,"
        f" {rec['j_per_output_token']:.3g} J per output token, median ITL {rec['itl_p50_s'] * 1000:.3g} ms"
    )
    if rec.get("default") == rec["chosen"]:
        text += "; the server's default configuration is the choice"
    elif rec.get("saving") is not None:
        span = rec.get("saving_interval")
        ci = f" [{span[0]:.0%}, {span[1]:.0%}]" if span else " (one round: no interval)"
        text += f"; {rec['saving']:.0%}{ci} less energy per request than the default ({rec['default']})"
        if not rec.get("default_slo_met"):
            text += ", which itself misses the SLO"
    elif rec.get("saving_note"):
        text += f"; {rec['saving_note']}"
    lines.append(text + ".")
    return lines


def _rows(report: dict[str, Any]) -> list[Row]:
    return [Row((r["config_id"], r["level"]), r, r["provenance"] or "none") for r in report["rows"]]


def sweep_markdown(report: dict[str, Any], image: str | None) -> str:
    title = f"wattlm sweep: {report['run']}"
    return markdown_page(title, _context(report), LEAD, COLUMNS, _rows(report), image, "energy against latency")


def sweep_html(report: dict[str, Any], svg: str | None) -> str:
    title = f"wattlm sweep: {report['run']}"
    return html_page(title, _context(report), LEAD, COLUMNS, _rows(report), svg, "energy against latency")
