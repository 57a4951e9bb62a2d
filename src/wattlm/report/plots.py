"""Report figures with matplotlib (Agg backend, no display): Pareto front of quality loss against
J/token per phase, energy per token per phase, tokens/s. Each figure is returned as SVG text (for
the self-contained HTML) and written as PNG (for the Markdown)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

MARKERS = "osD^v<>p*h"


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "wattlm"  # stable ids: the same report renders the same SVG
    return plt.subplots(figsize=(7.0, 4.2), dpi=110)


def _finish(fig: Any, png: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(png, format="png")
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue: the SVG sits inside HTML


def pareto(report: dict[str, Any], phase: str, png: Path) -> str:
    fig, ax = _figure()
    for i, run in enumerate(report["runs"]):
        rows = [
            r
            for r in run["rows"]
            if r["status"] == "ok" and r[f"{phase}_j_per_token"] is not None and r["delta_ppl_pct"] is not None
        ]
        front = set(run["pareto"][phase])
        xs, ys = [r[f"{phase}_j_per_token"] for r in rows], [r["delta_ppl_pct"] for r in rows]
        ax.scatter(xs, ys, marker=MARKERS[i % len(MARKERS)], label=run["label"], alpha=0.8)
        for r in rows:
            ax.annotate(
                r["variant"],
                (r[f"{phase}_j_per_token"], r["delta_ppl_pct"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        on_front = sorted((r[f"{phase}_j_per_token"], r["delta_ppl_pct"]) for r in rows if r["variant"] in front)
        if len(on_front) > 1:
            ax.step([p[0] for p in on_front], [p[1] for p in on_front], where="post", linewidth=1, alpha=0.6)
    ax.axhline(report["budget_pct"], linestyle="--", linewidth=0.8, color="grey")
    ax.set_xlabel(f"{phase} J/token")
    ax.set_ylabel("ΔPPL % vs baseline")
    ax.set_title(f"Quality against {phase} energy (Pareto front joined; dashed: budget)")
    losses = [r["delta_ppl_pct"] for run in report["runs"] for r in run["rows"] if r["delta_ppl_pct"] is not None]
    if losses and max(losses) > 50:
        ax.set_yscale("symlog", linthresh=5)  # from +0.1 % to +1000 % on one axis
        ax.set_ylim(bottom=min(0.0, min(losses)) - 1, top=max(losses) * 3)
    ax.legend(fontsize=7)
    return _finish(fig, png)


def bars(report: dict[str, Any], keys: list[tuple[str, str]], ylabel: str, title: str, png: Path) -> str:
    """Grouped bars: one group per (run, variant), one bar per key."""
    fig, ax = _figure()
    labels, groups = [], []
    for run in report["runs"]:
        for r in run["rows"]:
            labels.append(r["variant"] if len(report["runs"]) == 1 else f"{r['variant']}\n{Path(run['path']).name}")
            groups.append([r.get(key) or 0.0 for key, _ in keys])
    width = 0.8 / max(1, len(keys))
    for k, (_, name) in enumerate(keys):
        ax.bar([i + k * width for i in range(len(groups))], [g[k] for g in groups], width, label=name)
    positive = [v for g in groups for v in g if v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_yscale("log")  # decode and prefill differ by orders of magnitude
    ax.set_xticks(
        [i + width * (len(keys) - 1) / 2 for i in range(len(groups))], labels, rotation=60, ha="right", fontsize=7
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _finish(fig, png)


def all_figures(report: dict[str, Any], folder: Path) -> dict[str, str]:
    """name → SVG text; the PNG of each is written to folder/<name>.png."""
    return {
        "pareto_decode": pareto(report, "decode", folder / "pareto_decode.png"),
        "pareto_prefill": pareto(report, "prefill", folder / "pareto_prefill.png"),
        "energy": bars(
            report,
            [("prefill_j_per_token", "prefill"), ("decode_j_per_token", "decode")],
            "J/token",
            "Energy per token, per phase",
            folder / "energy.png",
        ),
        "speed": bars(
            report,
            [("prefill_tokens_per_s", "prefill"), ("decode_tokens_per_s", "decode")],
            "tokens/s",
            "Speed per phase",
            folder / "speed.png",
        ),
    }
