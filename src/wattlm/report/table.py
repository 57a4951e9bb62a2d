"""One table page in Markdown and HTML, for the reports whose body is a single table and a figure
(train runs, load runs): context bullets, the loud estimate warning, the rows, the figure."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ESTIMATED = "Energy marked estimated comes from a model of power, not a measurement."


@dataclass(frozen=True)
class Row:
    lead: tuple[str, ...]  # the first cells (run, level, …), as text
    values: dict[str, Any]  # the figures, formatted by the columns
    provenance: str


def cell(values: dict[str, Any], key: str, fmt: str) -> str:
    value = values.get(key)
    return "—" if value is None else format(value, fmt)


def markdown_page(
    title: str,
    context: Sequence[str],
    lead: Sequence[str],
    columns: Sequence[tuple[str, str, str]],
    rows: Sequence[Row],
    image: str | None,
    alt: str,
) -> str:
    lines = [f"# {title}", "", *[f"- {x}" for x in context], ""]
    lines.append("| " + " | ".join([*lead, *(t for t, _, _ in columns), "provenance"]) + " |")
    lines.append("|" + "---|" * len(lead) + "---:|" * len(columns) + "---|")
    for r in rows:
        cells = [*r.lead, *(cell(r.values, k, f) for _, k, f in columns), r.provenance]
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.provenance == "estimated" for r in rows):
        lines += ["", f"**{ESTIMATED}**"]
    if image:
        lines += ["", f"![{alt}]({image})"]
    return "\n".join(lines) + "\n"


def html_page(
    title: str,
    context: Sequence[str],
    lead: Sequence[str],
    columns: Sequence[tuple[str, str, str]],
    rows: Sequence[Row],
    svg: str | None,
    alt: str,
) -> str:
    from .render import CSS

    e = html.escape
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>',
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1><ul>" + "".join(f"<li>{e(x)}</li>" for x in context) + "</ul>",
    ]
    if any(r.provenance == "estimated" for r in rows):
        parts.append(f'<p class="warn"><strong>{e(ESTIMATED)}</strong></p>')
    head = "".join(f"<th>{e(t)}</th>" for t in [*lead, *(t for t, _, _ in columns), "provenance"])
    parts.append(f'<div class="scroll"><table><tr>{head}</tr>')
    for r in rows:
        cells = "".join(f"<td>{e(x)}</td>" for x in [*r.lead, *(cell(r.values, k, f) for _, k, f in columns)])
        badge = f'<span class="badge {e(r.provenance)}">{e(r.provenance)}</span>'
        parts.append(f"<tr>{cells}<td>{badge}</td></tr>")
    parts.append("</table></div>")
    if svg:
        parts.append(f'<figure aria-label="{e(alt)}">{svg}</figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
