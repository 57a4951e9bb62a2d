"""The report as Markdown (images beside it) and as one self-contained HTML page (SVG inline, CSS
inline, no script, nothing fetched)."""

from __future__ import annotations

import html
from typing import Any

BADGE = {"counter": "counter", "integrated": "integrated", "estimated": "estimated"}
COLUMNS = [  # (title, key, format)
    ("ppl", "ppl", ".2f"),
    ("ΔPPL %", "delta_ppl_pct", "+.2f"),
    ("KL", "kl", ".3g"),
    ("prefill J/tok", "prefill_j_per_token", ".4g"),
    ("prefill tok/s", "prefill_tokens_per_s", ",.0f"),
    ("decode J/tok", "decode_j_per_token", ".4g"),
    ("decode tok/s", "decode_tokens_per_s", ",.1f"),
    ("peak mem MiB", "peak_memory_bytes", "mib"),
    ("size MiB", "model_bytes", "mib"),
    ("params (non-zero)", "params_total", "params"),
]
# Shown where a run has paired intervals (bench --rounds): tokens/J over the baseline's, median (95 % interval)
INTERVAL_COLUMNS = [
    ("prefill tok/J ×base", "prefill_tokens_per_j_interval", "interval"),
    ("decode tok/J ×base", "decode_tokens_per_j_interval", "interval"),
    ("query energy ÷", "query_energy_interval", "interval"),
]


def columns(run: dict[str, Any]) -> list[tuple[str, str, str]]:
    rounds = any(r.get(key) for r in run["rows"] for _, key, _ in INTERVAL_COLUMNS)
    return COLUMNS + INTERVAL_COLUMNS if rounds else COLUMNS


def interval_note(run: dict[str, Any]) -> str | None:
    if columns(run) is COLUMNS:
        return None
    rounds = max(r.get("rounds") or 1 for r in run["rows"])
    return (
        f"×base: the variant's tokens/J over the baseline's (query energy: the baseline's J per query over the"
        f" variant's), the median of per-round ratios over {rounds} rounds run in rotating order, with its 95 %"
        " bootstrap interval; > 1 is better, ? marks an interval that includes 1 (not resolved on this machine)."
    )


def interval_text(iv: dict[str, Any]) -> str:
    """1.12× (1.05–1.20), with `?` marking an interval that includes 1 (not resolved)."""
    if iv.get("low") is None:
        return f"{iv['median']:.3f}×"
    mark = "" if iv.get("resolved") else " ?"
    return f"{iv['median']:.3f}× ({iv['low']:.3f}–{iv['high']:.3f}){mark}"


def _fmt(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        if key == "ppl" and row.get("status") == "failed":
            return "failed"  # the reason is in the recommendation's list of rejected variants
        if key.startswith("decode_") and row.get("decode_unresolved"):
            return "unresolved"
        return "—"
    if fmt == "interval":
        return interval_text(value)
    if fmt == "mib":
        return f"{value / 2**20:,.0f}"
    if fmt == "params":
        nz = row.get("params_nonzero")
        return f"{value / 1e6:,.1f}M" + (f" ({nz / 1e6:,.1f}M)" if nz is not None and nz != value else "")
    return format(value, fmt)


def _energy_cell(row: dict[str, Any], key: str, fmt: str, badge: Any) -> str:
    phase = key.split("_")[0]
    provenance = row.get(f"{phase}_provenance")
    return badge(_fmt(row, key, fmt), provenance) if provenance and "j_per_token" in key else _fmt(row, key, fmt)


def _per_million(row: dict[str, Any], report: dict[str, Any]) -> list[str]:
    m = row.get("decode_per_million_tokens")
    if m is None:
        return ["—", "—", "—"]
    cost = "—" if m["cost"] is None else f"{m['cost']:,.3f}"
    return [f"{m['kwh']:.4g}", f"{m['co2e_g']:,.1f}", cost]


def _why_lines(run: dict[str, Any], phase: str) -> tuple[str, list[str]]:
    rec = run["recommendation"][phase]
    if rec["variant"] is None:
        head = f"No variant has a {phase} energy figure."
    else:
        saving = (
            ""
            if rec["saving_pct"] is None
            else f", {rec['saving_pct']:.1f} % less {phase} energy per token than the baseline"
        )
        if rec.get("saving_interval_pct"):
            low, high = rec["saving_interval_pct"]
            saving += f" (95 % interval {low:.1f}–{high:.1f} % over {rec['rounds']} rounds)"
        head = (
            f"Ship **{rec['variant']}** for {phase}: ΔPPL {rec['delta_ppl_pct']:+.2f} % (budget {rec['budget_pct']:g}"
            f" %){saving}."
        )
    return head, [f"{name}: {why}" for name, why in rec["rejected"].items()]


def _context(report: dict[str, Any]) -> list[str]:
    c = report["carbon"]
    where = f"{c['region']} {c['g_per_kwh']:g} g CO2e/kWh ({c['source']}{', ' + str(c['year']) if c['year'] else ''})"
    lines = [
        f"Per million tokens: facility energy at PUE {report['facility']['pue']:g}, carbon at {where}"
        + (" — the default region; give --region" if c["defaulted"] else "")
        + "."
    ]
    lines.append(f"Rating: {report['rating']}.")
    return lines


def markdown(report: dict[str, Any], images: dict[str, str]) -> str:
    def badge(text: str, provenance: str) -> str:
        return f"{text} `{BADGE.get(provenance, provenance)}`"

    cost_title = f"cost {report['currency']}/1M tok" if report["currency"] else "cost/1M tok"
    out = ["# wattlm report", ""]
    out += [f"- {line}" for line in _context(report)]
    for run in report["runs"]:
        model = run["model"] or {}
        env = run["environment"]
        out += ["", f"## {run['label']}", ""]
        out.append(
            f"Model {model.get('name')} ({model.get('source_format')}); text {(run['text'] or {}).get('name')};"
            f" {run['protocol'].get('windows')} windows of {run['protocol'].get('seq_len')} tokens; torch"
            f" {env.get('torch')}, {env.get('logical_cpus')} logical CPUs. Energy provenance:"
            f" {', '.join(run['provenance']) or 'none'}."
        )
        if "estimated" in run["provenance"]:
            out.append("")
            out.append(
                "**Energy here is ESTIMATED from a model of power, not measured** (no readable counter on that"
                " machine)."
            )
        out += [
            "",
            "| variant | "
            + " | ".join(t for t, _, _ in columns(run))
            + f" | kWh/1M tok | g CO2e/1M tok | {cost_title} | rating |",
        ]
        out.append("|---" * (len(columns(run)) + 5) + "|")
        for row in run["rows"]:
            name = row["variant"] + (" (baseline)" if row["baseline"] else "")
            cells = [_energy_cell(row, key, fmt, badge) for _, key, fmt in columns(run)]
            rating = run["stars"].get(row["variant"])
            out.append(
                f"| {name} | "
                + " | ".join(cells + _per_million(row, report) + ["★" * rating if rating else "—"])
                + " |"
            )
        if interval_note(run):
            out += ["", str(interval_note(run))]
        for phase in ("decode", "prefill"):
            head, why = _why_lines(run, phase)
            out += ["", head, ""] + [f"- {line}" for line in why]
        out += [
            "",
            (
                f"Pareto front (decode): {', '.join(run['pareto']['decode'])}. Pareto front (prefill):"
                f" {', '.join(run['pareto']['prefill'])}."
            ),
        ]
    if len(report["runs"]) > 1:
        out += ["", "## Side by side (decode J/token, ΔPPL %)", ""]
        names = list(dict.fromkeys(r["variant"] for run in report["runs"] for r in run["rows"]))
        out.append("| variant | " + " | ".join(run["label"] for run in report["runs"]) + " |")
        out.append("|---" * (len(report["runs"]) + 1) + "|")
        for name in names:
            cells = []
            for run in report["runs"]:
                row = next((r for r in run["rows"] if r["variant"] == name), None)
                cells.append(
                    "—"
                    if row is None
                    else f"{_fmt(row, 'decode_j_per_token', '.4g')} ({_fmt(row, 'delta_ppl_pct', '+.2f')} %)"
                )
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["", "## Figures", ""] + [f"![{name}]({file})" for name, file in images.items()]
    return "\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #1a1a1a; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.badge { font-size: 0.7rem; padding: 0 0.3rem; border-radius: 0.3rem; margin-left: 0.2rem; }
.counter { background: #d4f4dd; } .integrated { background: #dbe9ff; } .estimated { background: #ffe1c4; }
.warn { background: #fff4e5; border-left: 4px solid #f0a030; padding: 0.5rem 1rem; }
.rec { background: #eef8ee; border-left: 4px solid #3a3; padding: 0.5rem 1rem; }
figure { display: inline-block; margin: 0.5rem; } svg { max-width: 100%; height: auto; }
"""


def html_page(report: dict[str, Any], figures: dict[str, str]) -> str:
    e = html.escape

    def badge(text: str, provenance: str) -> str:
        kind = BADGE.get(provenance, provenance)
        return f'{e(text)}<span class="badge {e(kind)}">{e(kind)}</span>'

    cost_title = f"cost {report['currency']}/1M tok" if report["currency"] else "cost/1M tok"
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>wattlm report</title>',
        f"<style>{CSS}</style></head><body>",
    ]
    parts.append("<h1>wattlm report</h1><ul>" + "".join(f"<li>{e(line)}</li>" for line in _context(report)) + "</ul>")
    for run in report["runs"]:
        model = run["model"] or {}
        parts.append(
            f"<h2>{e(run['label'])}</h2><p>Model {e(str(model.get('name')))} ({e(str(model.get('source_format')))});"
            f" text {e(str((run['text'] or {}).get('name')))}; energy provenance:"
            f" {e(', '.join(run['provenance']) or 'none')}.</p>"
        )
        if "estimated" in run["provenance"]:
            parts.append(
                '<p class="warn"><strong>Energy here is ESTIMATED from a model of power, not measured</strong> (no'
                " readable counter on that machine).</p>"
            )
        head = "".join(f"<th>{e(t)}</th>" for t, _, _ in columns(run))
        parts.append(
            f'<div class="scroll"><table><tr><th>variant</th>{head}<th>kWh/1M tok</th><th>g CO2e/1M'
            f" tok</th><th>{e(cost_title)}</th><th>rating</th></tr>"
        )
        for row in run["rows"]:
            name = row["variant"] + (" (baseline)" if row["baseline"] else "")
            cells = [
                _energy_cell(row, key, fmt, badge) if "j_per_token" in key else e(_fmt(row, key, fmt))
                for _, key, fmt in columns(run)
            ]
            rating = run["stars"].get(row["variant"])
            cells += [e(c) for c in _per_million(row, report)] + [e("★" * rating if rating else "—")]
            parts.append(f"<tr><td>{e(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table></div>")
        if interval_note(run):
            parts.append(f"<p>{e(str(interval_note(run)))}</p>")
        for phase in ("decode", "prefill"):
            head_line, why = _why_lines(run, phase)
            parts.append(
                f'<div class="rec"><p>{e(head_line).replace("**", "")}</p><ul>'
                + "".join(f"<li>{e(w)}</li>" for w in why)
                + "</ul></div>"
            )
    for name, svg in figures.items():
        parts.append(f'<figure aria-label="{e(name)}">{svg}</figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
