"""`wattlm bench --rounds N`: the speed phases of every variant, N times in rotating order, summarized.

Each round gives one set of phase figures per variant (what `Bench._phases` returns: the median of
that round's meter windows). `combine` turns a variant's rounds into the figures of its record (the
median over rounds, the range over rounds, every window's measurement kept, and the per-round
figures); `paired` compares a variant with the baseline round by round (see wattlm.intervals):

    tokens_per_s   variant ÷ baseline tokens/s        > 1: faster
    tokens_per_j   baseline ÷ variant J/token         > 1: more tokens per joule
    query_energy   baseline ÷ variant J per query     > 1: less energy per query of the run's shape

A query is the run's prompt (--prompt-len) and answer (--new-tokens) at the first decode batch size,
priced as the report prices it (results.query_energy_j).
"""

from __future__ import annotations

import statistics
from typing import Any

from ..energy.sources.base import worst_provenance
from ..intervals import paired_ratio, rotation
from ..results import query_energy_j


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    # A figure most rounds could not resolve (e.g. decode shorter than the timer's grain) stays unresolved.
    return statistics.median(known) if known and 2 * len(known) >= len(values) else None


def _range(values: list[float | None]) -> list[float] | None:
    known = [v for v in values if v is not None]
    return [min(known), max(known)] if known and len(known) == len(values) else None


def _prefill(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    phases = [r["prefill"] for r in rounds]
    tps = [p["tokens_per_s"] for p in phases]
    jpt = [p["j_per_token"] for p in phases]
    return {
        "tokens_per_s": _median(tps),
        "j_per_token": _median(jpt),
        "tokens_per_s_range": _range(tps),
        "j_per_token_range": _range(jpt),
        "tokens_per_call": phases[0]["tokens_per_call"],
        "seconds_per_call": statistics.median(p["seconds_per_call"] for p in phases),
        "provenance": worst_provenance([p["provenance"] for p in phases]),
        "overhead": max(p["overhead"] for p in phases),
        "per_round": {"tokens_per_s": tps, "j_per_token": jpt},
        "measurements": [m for p in phases for m in p["measurements"]],
    }


def _decode(rounds: list[dict[str, Any]], index: int) -> dict[str, Any]:
    phases = [r["decode"][index] for r in rounds]
    tps = [p["tokens_per_s"] for p in phases]
    jpt = [p["j_per_token"] for p in phases]
    combined = {
        "batch_size": phases[0]["batch_size"],
        "new_tokens": phases[0]["new_tokens"],
        "tokens_per_s": _median(tps),
        "j_per_token": _median(jpt),
        "tokens_per_s_range": _range(tps),
        "j_per_token_range": _range(jpt),
        "unresolved": None,
        **{k: statistics.median(p[k] for p in phases) for k in ("ttft_s", "prompt_j", "generation_s", "generation_j")},
        "method": phases[0]["method"],
        "provenance": worst_provenance([p["provenance"] for p in phases]),
        "overhead": max(p["overhead"] for p in phases),
        "per_round": {"tokens_per_s": tps, "j_per_token": jpt},
        "measurements": {
            "prompt": [m for p in phases for m in p["measurements"]["prompt"]],
            "generate": [m for p in phases for m in p["measurements"]["generate"]],
        },
    }
    if combined["tokens_per_s"] is None or combined["j_per_token"] is None:
        reasons = [p["unresolved"] for p in phases if p["unresolved"]]
        combined["unresolved"] = f"unresolved in {len(reasons)} of {len(phases)} rounds: {reasons[0]}"
    return combined


def round_query_j(round_phases: dict[str, Any], prompt_len: int, new_tokens: int) -> float | None:
    decode = round_phases["decode"][0]
    return query_energy_j(prompt_len, new_tokens, round_phases["prefill"]["j_per_token"], decode["j_per_token"])


def combine(rounds: list[dict[str, Any]], prompt_len: int, new_tokens: int) -> dict[str, Any]:
    """One variant's rounds → `prefill`, `decode` (one per batch size) and `query_j_per_round`."""
    if not rounds:
        raise ValueError("no rounds to combine")
    return {
        "prefill": _prefill(rounds),
        "decode": [_decode(rounds, i) for i in range(len(rounds[0]["decode"]))],
        "query_j_per_round": [round_query_j(r, prompt_len, new_tokens) for r in rounds],
    }


def _interval(numerators: list[float | None], denominators: list[float | None]) -> dict[str, Any] | None:
    found = paired_ratio(numerators, denominators)
    return found.to_dict() if found is not None else None


def _phase_ratios(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    b, o = base["per_round"], other["per_round"]
    return {
        "tokens_per_s": _interval(o["tokens_per_s"], b["tokens_per_s"]),
        "tokens_per_j": _interval(b["j_per_token"], o["j_per_token"]),
    }


def paired(base: dict[str, Any], other: dict[str, Any], against: str) -> dict[str, Any]:
    """Round-by-round ratios of `other` to `base` (both from `combine`, over the same rounds)."""
    return {
        "against": against,
        "rounds": len(base["query_j_per_round"]),
        "prefill": _phase_ratios(base["prefill"], other["prefill"]),
        "decode": [
            {"batch_size": b["batch_size"], **_phase_ratios(b, o)}
            for b, o in zip(base["decode"], other["decode"], strict=True)
        ],
        "query_energy": _interval(base["query_j_per_round"], other["query_j_per_round"]),
        "meaning": (
            "median over rounds of variant/baseline tokens/s, baseline/variant J/token and baseline/variant J per"
            " query, each with a 95 % percentile-bootstrap interval over rounds; > 1 is better; an interval that"
            " includes 1 is not resolved on this machine"
        ),
    }


def finish(
    pending: list[dict[str, Any]],
    per_variant: dict[str, list[dict[str, Any]]],
    base: str,
    prompt_len: int,
    new_tokens: int,
) -> list[dict[str, Any]]:
    """The records of a rounds run: each timed variant's round-1 record (from `pending`) with its figures
    from all its rounds (`per_variant`, in the run's order), the orders the rounds ran in, and its paired
    ratios to `base`. Records of variants not timed (failed) are kept as they are."""
    specs = list(per_variant)
    count = len(next(iter(per_variant.values()), []))
    combined = {spec: combine(r, prompt_len, new_tokens) for spec, r in per_variant.items()}
    out = []
    for record in pending:
        spec = record["variant"]
        if spec not in combined:
            out.append(record)
            continue
        mine = combined[spec]
        record = {**record, "prefill": mine["prefill"], "decode": mine["decode"]}
        record["rounds"] = {
            "count": count,
            "orders": [rotation(specs, r) for r in range(count)],
            "query_j": mine["query_j_per_round"],
        }
        if spec != base:
            record["paired"] = (
                paired(combined[base], mine, base)
                if base in combined
                else {"against": base, "missing": "the baseline was not timed in these rounds (failed or resumed)"}
            )
        out.append(record)
    return out
