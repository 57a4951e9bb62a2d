"""Which variant to ship: the Pareto front of quality loss against energy per token, the lowest-energy
variant within a quality budget, one line per rejected variant saying why, and star ratings.

Works on plain rows (dicts with `variant`, `delta_ppl_pct`, the energy figure, `status`,
`compression`), so it is tested on hand-made points and never needs a model.
"""

from __future__ import annotations

from typing import Any


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the non-dominated points (quality loss, energy): no other point is at least as good on
    both and strictly better on one. Identical points are all on the front. Input order is kept."""
    front = []
    for name, loss, energy in points:
        dominated = any(
            (l2 <= loss and e2 <= energy) and (l2 < loss or e2 < energy) for n2, l2, e2 in points if n2 != name
        )
        if not dominated:
            front.append(name)
    return front


def _why_no_speed_up(row: dict[str, Any]) -> str | None:
    for step in row.get("compression") or []:
        kernel = step.get("kernel") or {}
        if kernel.get("fast") is False:
            if kernel.get("scheme") == "sparse":
                return (
                    f"{step['name']}: unstructured or N:M sparsity without a sparse kernel (the zeros are still"
                    " multiplied)"
                )
            if kernel.get("scheme") == "dense":
                return f"{step['name']}: {kernel.get('note')}"
            return f"{step['name']}: no fast kernel on this hardware ({kernel.get('note')})"
    return None


def recommend(rows: list[dict[str, Any]], budget_pct: float, energy_key: str) -> dict[str, Any]:
    """The lowest-`energy_key` variant with ΔPPL ≤ `budget_pct` (the baseline always qualifies), its
    saving against the baseline, and a reason for every other variant.

    rows: one per variant; the first with `baseline` true (else the first row) is the baseline.
    Ties in energy go to the smaller ΔPPL, then to the earlier row.
    """
    if not rows:
        raise ValueError("no variants to choose from")
    baseline = next((r for r in rows if r.get("baseline")), rows[0])
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get(energy_key) is not None]
    candidates = [r for r in ok if r is baseline or r["delta_ppl_pct"] <= budget_pct]
    order = {id(r): i for i, r in enumerate(rows)}
    chosen = min(candidates, key=lambda r: (r[energy_key], r["delta_ppl_pct"], order[id(r)])) if candidates else None
    base_energy = baseline.get(energy_key)
    reasons: dict[str, str] = {}
    for r in rows:
        if r is chosen:
            continue
        name = r["variant"]
        if r.get("status", "ok") != "ok":
            reasons[name] = f"failed: {r.get('error', 'no result')}"
        elif r.get(energy_key) is None:
            reasons[name] = "no energy figure for this phase"
        elif r is not baseline and r["delta_ppl_pct"] > budget_pct:
            reasons[name] = f"over the quality budget: ΔPPL {r['delta_ppl_pct']:+.2f} % > {budget_pct:g} %"
        elif base_energy is not None and r is not baseline and r[energy_key] >= base_energy:
            why = _why_no_speed_up(r)
            reasons[name] = (
                f"uses no less energy than the baseline ({r[energy_key]:.4g} vs {base_energy:.4g} J/token)"
                + (f"; {why}" if why else "")
            )
        else:
            assert chosen is not None
            reasons[name] = (
                f"uses more energy than {chosen['variant']} ({r[energy_key]:.4g} vs {chosen[energy_key]:.4g} J/token)"
            )
    saving = None
    if chosen is not None and base_energy:
        saving = 100.0 * (1.0 - chosen[energy_key] / base_energy)
    return {
        "variant": chosen["variant"] if chosen else None,
        "budget_pct": budget_pct,
        "energy_key": energy_key,
        "saving_pct": saving,
        "delta_ppl_pct": chosen["delta_ppl_pct"] if chosen else None,
        "rejected": reasons,
    }


# Star bounds in Wh per 1,000 queries, half a decade apart (×√10): 5★ below 1 Wh, 4★ below 3.16,
# 3★ below 10, 2★ below 31.6, 1★ above. A fixed scale, so a rating means the same in every report
# and two variants a few per cent apart do not land at opposite ends of it.
STAR_BOUNDS_WH = (1.0, 10**0.5, 10.0, 10**1.5)


def stars(values: dict[str, float]) -> dict[str, int]:
    """1-5 stars on the fixed scale STAR_BOUNDS_WH of Wh per 1,000 queries (5 = least energy)."""
    return {
        k: 5 - sum(1 for bound in STAR_BOUNDS_WH if v >= bound) for k, v in values.items() if v is not None and v > 0
    }
