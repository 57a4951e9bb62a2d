"""REPORT: which variant to ship, how much energy it saves, at what quality — from `wattlm bench` runs;
what each `wattlm train` run cost per trained token (report/training.py); which load level of
which `wattlm load` run serves a goodput request with the least energy (report/serving.py); and
which server configuration of a `wattlm sweep` meets the SLO with the least energy (report/sweep.py).

    from wattlm.report import ReportOptions, write_report
    write_report(["runs/a", "runs/b"], ReportOptions(budget_pct=2.0), out="runs/a/report",
                 formats=("html", "md", "json"))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidInputError
from ..fileio import atomic_folder
from .data import ReportOptions, build_report, parse_budget

FORMATS = ("html", "md", "json")
FILES = {"html": "report.html", "md": "report.md", "json": "report.json"}
IMAGES = (
    "pareto_decode.png",
    "pareto_prefill.png",
    "energy.png",
    "speed.png",
    "training.png",
    "serving.png",
    "sweep.png",
)

__all__ = ["FORMATS", "ReportOptions", "build_report", "parse_budget", "parse_formats", "write_report"]


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    wrong = [f for f in formats if f not in FORMATS]
    if not formats or wrong:
        raise ConfigError(f"{{format}} {text!r}: use a comma-separated subset of {', '.join(FORMATS)}", field="format")
    return formats


def _check_out(out: Path) -> None:
    """The folder may hold an older report (it is replaced whole), nothing else."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{{out}} {out} is a file; choose a folder", field="out")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in set(FILES.values()) | set(IMAGES)]
        if foreign:
            raise ConfigError(
                f"{{out}} {out} holds other files ({', '.join(sorted(foreign)[:3])}); choose an empty or report folder",
                field="out",
            )


def write_report(
    paths: list[str | Path], options: ReportOptions, out: str | Path, formats: tuple[str, ...] = FORMATS
) -> dict[str, Any]:
    """Build the report and write it to `out` (replaced as a whole, atomically); returns the report dict."""
    from .plots import all_figures
    from .render import html_page, markdown

    out = Path(out)
    _check_out(out)
    kind = _kind(paths)
    if kind == "train":
        from . import training

        parts = (training.build_train_report, training.figure, training.train_html, training.train_markdown)
        return _write_one_figure(paths, options, out, formats, "training.png", *parts)
    if kind == "load":
        from . import serving

        parts = (serving.build_load_report, serving.figure, serving.load_html, serving.load_markdown)
        return _write_one_figure(paths, options, out, formats, "serving.png", *parts)
    if kind == "sweep":
        from . import sweep

        parts = (sweep.build_sweep_report, sweep.figure, sweep.sweep_html, sweep.sweep_markdown)
        return _write_one_figure(paths, options, out, formats, "sweep.png", *parts)
    report = build_report(paths, options)  # reads and checks every run before anything is written
    with atomic_folder(out) as tmp:  # replaces an older report (checked above) as a whole
        figures = all_figures(report, tmp) if {"html", "md"} & set(formats) else {}
        if "md" not in formats:
            for name in IMAGES:
                (tmp / name).unlink(missing_ok=True)
        if "html" in formats:
            (tmp / FILES["html"]).write_text(html_page(report, figures), encoding="utf-8")
        if "md" in formats:
            (tmp / FILES["md"]).write_text(
                markdown(report, {name: f"{name}.png" for name in figures}), encoding="utf-8"
            )
        if "json" in formats:
            (tmp / FILES["json"]).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    report["written"] = {f: str(out / FILES[f]) for f in formats}
    return report


def _kind(paths: list[str | Path]) -> str:
    """ "bench" or "train": a report covers runs of one kind."""
    from ..results import RunDir

    if not paths:
        raise InvalidInputError("give at least one wattlm bench, train, load or sweep run folder")
    kinds = {RunDir.open(p).info.get("kind") for p in paths}
    if len(kinds) > 1:
        raise InvalidInputError(
            f"these runs are of kinds {', '.join(sorted(map(str, kinds)))}; report runs of one kind at a time"
        )
    return str(kinds.pop())


def _write_one_figure(
    paths: list[str | Path],
    options: ReportOptions,
    out: Path,
    formats: tuple[str, ...],
    image: str,
    build: Any,
    figure: Any,
    to_html: Any,
    to_markdown: Any,
) -> dict[str, Any]:
    """A train or load report: one table and one figure (PNG for Markdown, inline SVG in HTML)."""
    report = build(paths, options)
    with atomic_folder(out) as tmp:
        svg = figure(report, tmp / image) if {"html", "md"} & set(formats) else None
        if "md" not in formats:
            (tmp / image).unlink(missing_ok=True)
        if "html" in formats:
            (tmp / FILES["html"]).write_text(to_html(report, svg), encoding="utf-8")
        if "md" in formats:
            (tmp / FILES["md"]).write_text(to_markdown(report, image if svg else None), encoding="utf-8")
        if "json" in formats:
            (tmp / FILES["json"]).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    report["written"] = {f: str(out / FILES[f]) for f in formats}
    return report
