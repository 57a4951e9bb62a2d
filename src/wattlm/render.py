"""Rich renderings of measurements and probes for the terminal (CLI only; the library never prints)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .energy.measurement import Measurement
from .energy.sources.base import Probe
from .units import j_to_kwh, j_to_wh

_BADGE = {"counter": "green", "integrated": "cyan", "estimated": "bold yellow", "none": "red"}
_STATUS = {"ok": "green", "partial": "yellow", "failed": "bold red"}


def _j(energy_j: float | None) -> str:
    if energy_j is None:
        return "—"
    return f"{energy_j:,.1f} J ({j_to_wh(energy_j):.4g} Wh)"


def measurement_view(m: Measurement) -> Group:
    title = Text.assemble(
        ("wattlm · ", "bold"),
        (m.name, "bold"),
        "  ",
        (m.status.upper(), _STATUS.get(m.status, "")),
        f"  {m.duration_s:.2f} s",
    )
    devices = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("device", "domain", "energy", "how", "note"):
        devices.add_column(col)
    for d in m.devices:
        note = ", ".join(x for x in (("shared" if d.shared else ""), (f"{d.gaps} gaps" if d.gaps else "")) if x)
        devices.add_row(Text(d.label), d.domain, _j(d.energy_j), Text(d.provenance, _BADGE[d.provenance]), note)

    f = m.facility
    totals = Table(show_header=False, box=None, pad_edge=False)
    totals.add_column(style="bold")
    totals.add_column()
    totals.add_row("IT energy", Text.assemble(_j(m.it_energy_j), "  ", (m.provenance, _BADGE.get(m.provenance, ""))))
    peak = "—" if m.peak_power_w is None else f"{m.peak_power_w:.1f} W"
    totals.add_row("power", f"avg {m.avg_power_w:.1f} W, peak {peak}, {m.samples} samples")
    overhead = f"PUE {f.pue:.3g}" + (" (IT energy only)" if f.method == "pue" and f.pue == 1.0 else "")
    if f.method == "cooling":
        overhead = f"cooling model, COP {f.cop:.3g} (effective PUE {f.pue:.3g})"
    totals.add_row("facility", f"{_j(f.facility_energy_j)}, {overhead}")
    region = f"{f.carbon.region}{' (default)' if f.carbon.defaulted else ''}"
    totals.add_row("CO2e", f"{f.co2e_g:.4g} g at {f.carbon.g_per_kwh:g} g/kWh, {region}")
    if f.cost is not None:
        totals.add_row("cost", f"{f.cost:.6f} {f.currency} ({j_to_kwh(f.facility_energy_j):.6f} kWh)")
    if m.tokens_per_j is not None:
        totals.add_row("efficiency", f"{m.tokens_per_j:.4g} tokens/J")
    if m.flop_per_j is not None:
        totals.add_row("efficiency", f"{m.flop_per_j:.4g} FLOP/J")
    if m.idle is not None:
        totals.add_row("idle split", f"static {_j(m.idle.static_energy_j)}, dynamic {_j(m.idle.dynamic_energy_j)}")
    if m.reason:
        totals.add_row("reason", Text(m.reason, "yellow"))
    parts: list[Any] = [title, devices, totals]
    parts += [Text(f"! {w}", "yellow") for w in m.warnings]
    return Group(*parts)


def probes_view(probes: list[Probe] | tuple[Probe, ...]) -> Table:
    table = Table(title="energy sources wattlm tried", header_style="bold")
    table.add_column("source")
    table.add_column("found")
    table.add_column("how it measures / why not", overflow="fold")
    for p in probes:
        table.add_row(p.source, Text("yes", "green") if p.available else Text("no", "red"), Text(p.detail))
    return table


def _g(value: float | None, fmt: str = ".3g") -> str:
    return "—" if value is None else format(value, fmt)


def _mib(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**20:,.0f} MiB"


def _unresolved(decode: dict, key: str, fmt: str) -> str:
    """A decode figure, or "unresolved" where generation minus prefill said nothing (see the record)."""
    if decode.get(key) is None and decode.get("unresolved"):
        return "unresolved"
    return _g(decode.get(key), fmt)


def _ratio(iv: dict[str, Any] | None) -> str:
    """A paired ratio to the baseline: 1.12× [1.05, 1.20], `?` where the interval includes 1."""
    if not iv:
        return "—"
    if iv.get("low") is None:
        return f"{iv['median']:.2f}×"
    return f"{iv['median']:.2f}× [{iv['low']:.2f}, {iv['high']:.2f}]" + ("" if iv.get("resolved") else " ?")


def _paired_lines(record: dict) -> str:
    """bench --rounds: tokens/J over the baseline's per phase, and the query energy ratio."""
    paired = record.get("paired") or {}
    if record.get("baseline"):
        return "baseline"
    if "missing" in paired:
        return paired["missing"]
    lines = [f"prefill {_ratio((paired.get('prefill') or {}).get('tokens_per_j'))}"]
    lines += [f"b={d['batch_size']} {_ratio(d.get('tokens_per_j'))}" for d in paired.get("decode") or []]
    lines.append(f"query {_ratio(paired.get('query_energy'))}")
    return "\n".join(lines)


def bench_view(records: list[dict], title: str = "wattlm bench") -> Table:
    """One row per variant; decode cells hold one line per batch size. With --rounds, a column of
    paired ratios to the baseline (tokens/J per phase, energy per query) with 95 % intervals."""
    rounds = max(((r.get("rounds") or {}).get("count", 1) for r in records), default=1)
    if rounds > 1:
        title += (
            f" — {rounds} rounds in rotating order; ×base: tokens/J over the baseline's [95 % interval],"
            " ? = not resolved"
        )
    table = Table(title=title, header_style="bold")
    columns = [
        ("variant", "left"),
        ("ppl", "right"),
        ("ΔPPL %", "right"),
        ("KL", "right"),
        ("prefill tok/s", "right"),
        ("prefill J/tok", "right"),
        ("decode tok/s", "right"),
        ("decode J/tok", "right"),
        ("TTFT s", "right"),
        ("peak mem", "right"),
        ("energy", "left"),
    ]
    if rounds > 1:
        columns.insert(-1, ("×base tok/J", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in records:
        if r.get("status") != "ok":
            table.add_row(
                r.get("variant", "?"),
                Text("failed", "bold red"),
                *([""] * (len(columns) - 3)),
                Text(r.get("reason") or r.get("error") or "", "red"),
            )
            continue
        decode = r.get("decode", [])
        several = len(decode) > 1

        def label(d: dict, several: bool = several) -> str:
            return f"b={d['batch_size']}: " if several else ""

        table.add_row(
            r["variant"] + (" (baseline)" if r.get("baseline") else ""),
            _g(r["ppl"], ".4g"),
            _g(r["delta_ppl_pct"], "+.2f"),
            _g(r["kl"], ".3g"),
            _g(r["prefill"]["tokens_per_s"], ",.0f"),
            _g(r["prefill"]["j_per_token"], ".3g"),
            "\n".join(label(d) + _unresolved(d, "tokens_per_s", ",.1f") for d in decode),
            "\n".join(label(d) + _unresolved(d, "j_per_token", ".3g") for d in decode),
            "\n".join(label(d) + _g(d["ttft_s"], ".3f") for d in decode),
            _mib(r.get("peak_memory_bytes")),
            *([_paired_lines(r)] if rounds > 1 else []),
            Text(r["provenance"], _BADGE.get(r["provenance"], "")),
        )
    return table


def load_view(records: list[dict[str, Any]], title: str = "wattlm load") -> Table:
    """One row per load level: throughput, latency percentiles, goodput and energy per token/request."""
    table = Table(title=title, header_style="bold", title_justify="left")
    for col in (
        "level",
        "status",
        "done/sent",
        "trunc",
        "tok/s",
        "TTFT p50/p99 s",
        "TPOT p50/p99 s",
        "goodput/s",
        "W",
        "J/token",
        "J/request",
        "J/good req",
        "provenance",
    ):
        table.add_column(col, justify="left" if col in ("level", "status", "provenance") else "right")

    def pair(stats: dict[str, Any]) -> str:
        return f"{_g(stats.get('p50'))} / {_g(stats.get('p99'))}"

    for r in records:
        status = Text(r["status"], _STATUS.get(r["status"], ""))
        if r.get("reason"):
            status.append(f" {r['reason']}", "dim")
        table.add_row(
            r["level"],
            status,
            f"{r['requests_completed']}/{r['requests_sent']}",
            str(r["requests_truncated"]) if r["requests_truncated"] else "",
            _g(r["output_tokens_per_s"], ".4g"),
            pair(r["ttft_s"]),
            pair(r["tpot_s"]),
            _g(r["goodput_per_s"]),
            _g(r.get("avg_power_w"), ".4g"),
            _g(r.get("j_per_output_token")),
            _g(r.get("j_per_request")),
            _g(r.get("j_per_good_request")),
            Text(r.get("provenance") or "—", _BADGE.get(r.get("provenance") or "none", "")),
        )
    return table
