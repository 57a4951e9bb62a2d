"""Each request's energy in a load level: its timeline (the client's view, refined by the server's own
timings where it gives them) split against the energy the meter read over the whole level.

The level's series runs from the start of its warm-up to the end of its drain, so every request the
level sent lies inside it; requests + idle = the meter's energy over those seconds (the load
generator's own share included where it cannot be told apart, as `generator` in the level says).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..attribution.price import price_list
from ..attribution.series import EnergySeries
from ..attribution.timeline import Timeline, split
from ..attribution.work import WorkModel
from .client import RequestRecord
from .metrics import percentile

EQUAL = "default: a prompt token and a decoded token weigh the same (a = b, c = 0)"
FULL = 0.999  # a request whose work lay this much inside the series counts as whole


def timeline_of(r: RequestRecord, rid: str) -> tuple[Timeline | None, str]:
    """The request's timeline, or None and why it has none."""
    if not r.ok or r.end_s is None:
        return None, f"not completed ({r.error or 'unfinished'})"
    if r.usage_prompt_tokens is None:
        return None, "the server reported no prompt token count (usage)"
    t = r.timings
    first = r.token_times_s[0] if r.token_times_s and r.streamed else None
    if first is None:
        if t is None or t.decode_s is None:
            return None, "not streamed and no server timings: nothing says when the prompt was read"
        first = max(r.sent_s, r.end_s - t.decode_s)
    start, source = None, "client"
    if t is not None and t.prompt_s is not None:
        start, source = max(r.sent_s, first - t.prompt_s), "server-timings"
    elif t is not None and t.queue_s is not None:
        start, source = min(first, r.sent_s + t.queue_s), "server-timings"
    prompt = r.usage_prompt_tokens
    timeline = Timeline(
        id=rid,
        arrival_s=r.sent_s,
        first_token_s=first,
        end_s=max(first, r.end_s),
        prompt_tokens=prompt,
        output_tokens=r.output_tokens,
        cached_tokens=min(_cached(r) or 0, prompt),
        prefill_start_s=start,
        token_times_s=tuple(r.token_times_s) if r.streamed else (),
        source=source,
    )
    return (None, why) if (why := timeline.problems()) else (timeline, "")


def _cached(r: RequestRecord) -> int | None:
    """Cached prompt tokens where the server says (usage first, then its timings)."""
    if r.usage_cached_tokens is not None:
        return r.usage_cached_tokens
    return None if r.timings is None else r.timings.cached_tokens


def _status(r: RequestRecord) -> str:
    if not r.ok:
        return "failed"
    return "truncated" if r.truncated else "completed"


def attribute_level(
    records: Sequence[RequestRecord],
    series: EnergySeries,
    *,
    level: str,
    attempt: str,
    provenance: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one line per request, the level's per-request summary), with the default work model: a
    prompt token and a decoded token weigh the same."""
    ids = [r.response_id or f"{level}#{i}" for i, r in enumerate(records)]
    if len(set(ids)) != len(ids):  # a server that reuses ids: keep them apart
        ids = [f"{rid}#{i}" for i, rid in enumerate(ids)]
    made = [timeline_of(r, rid) for r, rid in zip(records, ids)]
    timelines = [t for t, _ in made if t is not None]
    work, how = WorkModel(), EQUAL
    usable = len(series.times_s) >= 2
    out = split(timelines, series, work) if usable else None
    t0 = series.times_s[0] if series.times_s else 0.0
    rel = lambda x: None if x is None else round(x - t0, 6)  # noqa: E731
    lines = []
    for r, rid, (t, why) in zip(records, ids, made):
        line: dict[str, Any] = {
            "id": rid,
            "level": level,
            "attempt": attempt,
            "measured": r.measured,
            **({"conversation": r.conversation, "turn": r.turn} if r.conversation is not None else {}),
            "status": _status(r),
            "error": r.error,
            "prompt_tokens": r.usage_prompt_tokens,
            "cached_prompt_tokens": _cached(r),
            "output_tokens": r.output_tokens if r.ok else None,
            "timeline": {
                "clock": "seconds from the start of the level's energy series",
                "sent_s": rel(r.sent_s),
                "prefill_start_s": rel(t.prefill_start_s) if t is not None else None,
                "first_token_s": rel(t.first_token_s) if t is not None else None,
                "end_s": rel(r.end_s),
                "token_times_s": [round(x - t0, 4) for x in r.token_times_s],
            },
            "timeline_source": None if t is None else t.source,
            "server_timings": None if r.timings is None else r.timings.to_dict(),
            "energy_j": None,
            "prefill_j": None,
            "decode_j": None,
            "energy_status": "unattributed",
            "energy_reason": why or ("no energy series was read" if not usable else ""),
            "provenance": provenance,
        }
        if t is not None and out is not None:
            share = out.requests[rid]
            line.update(energy_j=share.energy_j, prefill_j=share.prefill_j, decode_j=share.decode_j)
            if share.covered < FULL:
                line["energy_status"] = "partial"
                line["energy_reason"] = f"{100 * share.covered:.1f} % of its work lay inside the metered series"
            elif share.partial:
                line["energy_status"] = "partial"
                line["energy_reason"] = "an energy reading it overlaps was lost (see the level's reason)"
            else:
                line["energy_status"], line["energy_reason"] = "ok", ""
        lines.append(line)
    return lines, _summary(lines, out.to_dict() if out is not None else None, work, how)


def _summary(
    lines: list[dict[str, Any]], split_totals: dict[str, Any] | None, work: WorkModel, how: str
) -> dict[str, Any]:
    whole = [x for x in lines if x["measured"] and x["energy_status"] == "ok"]
    energies = [x["energy_j"] for x in whole]
    priced = [x for x in whole if x["status"] in ("completed", "truncated")]
    out: dict[str, Any] = {
        "method": "timeline split (docs/ledger.md#the-method-splitting-energy-along-request-timelines)",
        "series": split_totals,
        "work_model": {**work.to_dict(), "how": how},
        "requests_attributed": len(whole),
        "unattributed": dict(
            Counter(x["energy_reason"] for x in lines if x["measured"] and x["energy_status"] != "ok")
        ),
        "timeline_sources": dict(Counter(x["timeline_source"] for x in whole)),
        "energy_per_request_j": {
            "p50": percentile(energies, 50),
            "p90": percentile(energies, 90),
            "p99": percentile(energies, 99),
            "mean": statistics.fmean(energies) if energies else None,
        },
        "price_list": price_list(
            [x["prompt_tokens"] for x in priced], [x["output_tokens"] for x in priced], [x["energy_j"] for x in priced]
        ),
    }
    if any("turn" in x for x in lines):
        out["by_turn"] = by_turn(lines)
    return out


def by_turn(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per turn of the conversations: measured requests, mean prompt and cached tokens, the share of
    prompt tokens served from a cache, and energy per request (attributed ones only)."""
    out = []
    for turn in sorted({x["turn"] for x in lines if "turn" in x}):
        rows = [x for x in lines if x.get("turn") == turn and x["measured"] and x["status"] != "failed"]
        if not rows:
            continue
        prompt = [x["prompt_tokens"] for x in rows if x["prompt_tokens"] is not None]
        cached = [x["cached_prompt_tokens"] for x in rows if x["cached_prompt_tokens"] is not None]
        energy = [x["energy_j"] for x in rows if x["energy_status"] == "ok"]
        out.append(
            {
                "turn": turn,
                "requests": len(rows),
                "prompt_tokens_mean": statistics.fmean(prompt) if prompt else None,
                "cached_tokens_mean": statistics.fmean(cached) if cached else None,
                "cached_share": sum(cached) / sum(prompt)
                if cached and len(cached) == len(prompt) and sum(prompt)
                else None,
                "requests_attributed": len(energy),
                "energy_per_request_j": {
                    "mean": statistics.fmean(energy) if energy else None,
                    "p50": percentile(energy, 50),
                },
            }
        )
    return out
