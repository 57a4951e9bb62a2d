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


def interval_key(energy_key: str) -> str:
    """`decode_j_per_token` → `decode_tokens_per_j_interval`: the row's paired ratio to the baseline."""
    return energy_key.replace("j_per_token", "tokens_per_j_interval")


def _unresolved(row: dict[str, Any], energy_key: str) -> str | None:
    """Why the row's difference from the baseline is not resolved (its interval includes 1), else None.
    A row without an interval (a bench run of one round) is judged on its figures alone."""
    iv = row.get(interval_key(energy_key))
    if not iv or iv.get("low") is None or iv.get("resolved"):
        return None
    return (
        f"not resolved on this machine: {iv['median']:.3f}× the baseline's tokens/J in the median round, but the 95 %"
        f" interval {iv['low']:.3f}–{iv['high']:.3f} over {iv['rounds']} rounds includes 1 (run more --rounds, or on a"
        " quieter machine)"
    )


def _saving(chosen: dict[str, Any], energy_key: str, base_energy: float | None) -> tuple[Any, Any]:
    """Per cent less energy than the baseline and its 95 % interval: from the paired ratio r (tokens/J,
    variant over baseline) where the run has one, saving = 1 − 1/r; else from the two figures."""
    iv = chosen.get(interval_key(energy_key))
    if iv and not chosen.get("baseline"):
        low = None if iv.get("low") is None else 100.0 * (1.0 - 1.0 / iv["low"])
        high = None if iv.get("high") is None else 100.0 * (1.0 - 1.0 / iv["high"])
        return 100.0 * (1.0 - 1.0 / iv["median"]), [low, high] if low is not None else None
    if base_energy:
        return 100.0 * (1.0 - chosen[energy_key] / base_energy), None
    return None, None


def recommend(rows: list[dict[str, Any]], budget_pct: float, energy_key: str) -> dict[str, Any]:
    """The lowest-`energy_key` variant with ΔPPL ≤ `budget_pct` (the baseline always qualifies), its
    saving against the baseline, and a reason for every other variant.

    rows: one per variant; the first with `baseline` true (else the first row) is the baseline.
    Ties in energy go to the smaller ΔPPL, then to the earlier row. Where rows carry paired intervals
    (bench --rounds), a variant whose interval includes 1 is not chosen: its saving is not resolved.
    """
    if not rows:
        raise ValueError("no variants to choose from")
    baseline = next((r for r in rows if r.get("baseline")), rows[0])
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get(energy_key) is not None]
    candidates = [
        r for r in ok if r is baseline or (r["delta_ppl_pct"] <= budget_pct and _unresolved(r, energy_key) is None)
    ]
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
        elif r is not baseline and (why_not := _unresolved(r, energy_key)):
            reasons[name] = why_not
        else:
            assert chosen is not None
            reasons[name] = (
                f"uses more energy than {chosen['variant']} ({r[energy_key]:.4g} vs {chosen[energy_key]:.4g} J/token)"
            )
    saving, saving_interval = _saving(chosen, energy_key, base_energy) if chosen is not None else (None, None)
    iv = chosen.get(interval_key(energy_key)) if chosen is not None and chosen is not baseline else None
    return {
        "variant": chosen["variant"] if chosen else None,
        "budget_pct": budget_pct,
        "energy_key": energy_key,
        "saving_pct": saving,
        "saving_interval_pct": saving_interval,
        "rounds": iv.get("rounds") if iv else None,
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
