"""The report of `wattlm train` runs: one row per run (what it trained, J per trained token, loss,
held-out perplexity before and after, the whole run's kWh, CO2e and cost through the facility
model) and a figure of loss and J/token per step, every run on the same axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..results import RunDir
from ..units import j_to_kwh
from .data import ReportOptions
from .table import Row, html_page, markdown_page

COLUMNS = [  # (title, key, format)
    ("steps", "steps", ",d"),
    ("tokens", "tokens", ",d"),
    ("tok/s", "tokens_per_s", ",.1f"),
    ("J/token", "j_per_token", ".4g"),
    ("loss first", "first_loss", ".4f"),
    ("loss last", "last_loss", ".4f"),
    ("ppl before", "ppl_before", ".2f"),
    ("ppl after", "ppl_after", ".2f"),
    ("run kWh", "kwh", ".3g"),
    ("g CO2e", "co2e_g", ".3g"),
    ("cost", "cost", ".3g"),
]


def describe(config: dict[str, Any], world: int) -> str:
    """What a run trained, in a few words: precision, QAT, distillation, processes."""
    parts = [config.get("precision", "?")]
    if config.get("qat"):
        parts.append(f"QAT {config['qat']}")
    if config.get("teacher"):
        parts.append(f"distilled ({config.get('student') or 'given student'})")
    if world > 1:
        parts.append(f"{world} × {config.get('sync')}")
    return ", ".join(parts)


def train_section(path: str | Path, options: ReportOptions) -> dict[str, Any]:
    run = RunDir.open(path, kind="train")
    records = run.records()
    summaries = [r for r in records if r.get("kind") == "summary"]
    if not summaries:
        raise InvalidInputError(
            f"{path} has no finished training yet (no summary in results.jsonl); run or resume wattlm train first"
        )
    s = summaries[-1]
    steps = [r for r in records if r.get("kind") == "step"]
    world = (run.info.get("data") or {}).get("world_size", 1)
    energy = s.get("run_it_energy_j")
    facility = options.facility.apply(energy) if energy is not None else None
    seconds = sum(r.get("duration_s") or 0 for r in steps)
    environment = run.info.get("environment") or {}
    row = {
        "run": Path(path).name,
        "what": describe(run.info.get("config") or {}, world),
        "steps": s.get("steps"),
        "tokens": s.get("tokens"),
        "tokens_per_s": s["tokens"] / seconds if seconds and s.get("tokens") else None,
        "j_per_token": s.get("j_per_token"),
        "provenance": s.get("provenance"),
        "first_loss": s.get("first_loss"),
        "last_loss": s.get("last_loss"),
        "ppl_before": (s.get("eval_before") or {}).get("ppl"),
        "ppl_after": (s.get("eval_after") or {}).get("ppl"),
        "ppl_after_convert": (s.get("eval_after_convert") or {}).get("ppl"),
        "kwh": j_to_kwh(facility.facility_energy_j) if facility else None,
        "co2e_g": facility.co2e_g if facility else None,
        "cost": facility.cost if facility else None,
    }
    return {
        "path": str(Path(path)),
        "label": (
            f"{Path(path).name} ({environment.get('device', '?')}:"
            f" {environment.get('gpu') or environment.get('cpu') or '?'})"
        ),
        "model": run.info.get("model"),
        "row": row,
        "series": [{"step": r["step"], "loss": r.get("loss"), "j_per_token": r.get("j_per_token")} for r in steps],
        "skipped_lines": run.skipped_lines,
    }


def build_train_report(paths: list[str | Path], options: ReportOptions) -> dict[str, Any]:
    carbon = options.facility.carbon
    return {
        "schema": "wattlm.report/1",
        "kind": "train",
        "facility": {"pue": options.facility.pue, "method": "cooling" if options.facility.cooling else "pue"},
        "carbon": carbon.to_dict() if carbon else None,
        "currency": options.facility.currency if options.facility.price_per_kwh is not None else None,
        "runs": [train_section(p, options) for p in paths],
    }


def figure(report: dict[str, Any], png: Path) -> str:
    """Loss (left) and J per trained token (right) against the step."""
    import matplotlib

    from .plots import _finish

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "wattlm"
    fig, (loss_ax, energy_ax) = plt.subplots(1, 2, figsize=(10.0, 4.0), dpi=110)
    for run in report["runs"]:
        points = run["series"]
        label = f"{run['row']['run']}: {run['row']['what']}"
        loss_ax.plot(
            [p["step"] for p in points if p["loss"] is not None],
            [p["loss"] for p in points if p["loss"] is not None],
            marker=".",
            label=label,
        )
        energy_ax.plot(
            [p["step"] for p in points if p["j_per_token"]],
            [p["j_per_token"] for p in points if p["j_per_token"]],
            marker=".",
            label=label,
        )
    loss_ax.set(xlabel="optimizer step", ylabel="training loss (nats/token)", title="loss")
    energy_ax.set(xlabel="optimizer step", ylabel="J per trained token", title="energy per token")
    energy_ax.legend(fontsize=7)
    return _finish(fig, png)


def _context(report: dict[str, Any]) -> list[str]:
    c = report["carbon"]
    lines = [
        f"Whole-run energy at PUE {report['facility']['pue']:g}; carbon {c['region']} {c['g_per_kwh']:g} g CO2e/kWh"
        f" ({c['source']})" + (" — the default region; give --region" if c["defaulted"] else "") + "."
    ]
    lines.append(
        "J/token: energy of the optimizer steps per trained token (summed over processes); run kWh: the whole run,"
        " checkpoints included."
    )
    lines.append(
        f"Cost in {report['currency']} (--price-per-kwh)." if report["currency"] else "Cost: give --price-per-kwh."
    )
    lines.append("Loss: next-token cross-entropy; for a distilled run the distillation loss α·T²·KL + (1−α)·CE.")
    return lines


def _rows(report: dict[str, Any]) -> list[Row]:
    return [Row((r["run"], r["what"]), r, str(r["provenance"])) for r in (run["row"] for run in report["runs"])]


def train_markdown(report: dict[str, Any], image: str | None) -> str:
    title, lead, alt = "wattlm training report", ("run", "what"), "loss and J/token per step"
    return markdown_page(title, _context(report), lead, COLUMNS, _rows(report), image, alt)


def train_html(report: dict[str, Any], svg: str | None) -> str:
    title, lead = "wattlm training report", ("run", "what")
    return html_page(title, _context(report), lead, COLUMNS, _rows(report), svg, "training")
