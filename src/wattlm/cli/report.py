"""`wattlm report RUN...`: tables, a recommendation under a quality budget, Pareto plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from ..report.data import ReportOptions
from .common import err, warn
from .facility import FACILITY, Cooling, Currency, Intensity, Price, Pue, Region


def report(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="wattlm bench, train or load run folders (runs of one kind; several are compared side by side), or"
            " one sweep run."
        ),
    ],
    budget_ppl: Annotated[
        str, typer.Option(help="Quality budget: the largest ΔPPL accepted, e.g. 2% or 0.5.")
    ] = f"{ReportOptions().budget_pct:g}%",
    region: Region = None,
    intensity: Intensity = None,
    pue: Pue = FACILITY.pue,
    cooling: Cooling = None,
    price_per_kwh: Price = None,
    currency: Currency = FACILITY.currency,
    formats: Annotated[str, typer.Option("--format", help="Comma-separated: html, md, json.")] = "html,md,json",
    out: Annotated[
        Optional[Path], typer.Option(help="Report folder (default RUN/report; RUN/report-compare for several runs).")
    ] = None,
) -> None:
    """Tables, figures and a recommendation from bench runs (quality budget), train runs, load runs (SLOs) or a
    sweep run (the lowest-energy configuration meeting its SLO)."""
    from ..energy.facility import facility_from_options
    from ..report import ReportOptions, parse_budget, parse_formats, write_report

    options = ReportOptions(
        budget_pct=parse_budget(budget_ppl),
        facility=facility_from_options(pue, cooling, region, intensity, price_per_kwh, currency),
    )
    chosen = parse_formats(formats)
    target = out or (runs[0] / ("report" if len(runs) == 1 else "report-compare"))
    result = write_report(list(runs), options, target, chosen)
    print_recommendation(result)
    for path in result["written"].values():
        print(path)


def report_after_bench(run: Path) -> None:
    """The report of a finished bench run, in RUN/report (`wattlm report RUN` redoes it with other options)."""
    from ..errors import WattlmError
    from ..report import ReportOptions, write_report

    try:
        written = write_report([run], ReportOptions(), run / "report")
    except (WattlmError, OSError) as e:  # the results are safe; say why the report is missing
        warn(f"no report: {e}; run wattlm report {run}")
        return
    print_recommendation(written)
    err.print(Text(f"report: {written['written']['html']}", "dim"))


def print_recommendation(report: dict[str, Any]) -> None:
    if report.get("kind") == "sweep":
        from ..report.sweep import _context

        err.print(Text(_context(report)[-1], "green" if report["recommendation"].get("chosen") else "yellow"))
        return
    if report.get("kind") == "load":
        rec = report["recommendation"]
        if rec is None:
            err.print(Text(f"no level met the SLOs for {report['attainment']:.0%} of its requests", "yellow"))
        else:
            err.print(
                Text(
                    f"recommended: {rec['run']} at {rec['level']} — {rec['j_per_good_request']:.3g} J per goodput"
                    f" request, {rec['slo_attainment']:.0%} within the SLOs",
                    "green",
                )
            )
        return
    if report.get("kind") == "train":
        for run in report["runs"]:
            r = run["row"]
            j = "—" if r["j_per_token"] is None else f"{r['j_per_token']:.4g}"
            loss = "—" if r["last_loss"] is None else f"{r['last_loss']:.4f}"
            err.print(
                Text(f"{r['run']} ({r['what']}): {j} J per trained token ({r['provenance']}), loss {loss}", "green")
            )
        return
    for run in report["runs"]:
        rec = run["recommendation"]["decode"]
        if rec["variant"] is not None:
            saving = (
                ""
                if rec["saving_pct"] is None
                else f", {rec['saving_pct']:.1f} % less decode energy per token than the baseline"
            )
            line = (
                f"recommended ({run['label']}): {rec['variant']} — ΔPPL {rec['delta_ppl_pct']:+.2f} % within"
                f" {rec['budget_pct']:g} %{saving}"
            )
            err.print(Text(line, "green"))
