"""From request records and a metered window to a level's figures.

Two populations, kept apart on purpose:
- latency (TTFT, TPOT, ITL, end-to-end) is over the requests *sent* inside the measured window,
  followed to their end during the drain; truncated requests are counted, not averaged in;
- energy per token is energy of the window ÷ output tokens whose arrival time falls inside it
  (whatever request they belong to), and energy per request is energy ÷ requests *completed*
  inside it. Both numerator and denominator then cover the same seconds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .client import RequestRecord

QUANTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None without values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"p{q}": percentile(values, q) for q in QUANTILES}
    out["mean"] = _mean(values)
    return out


def ttft_s(r: RequestRecord) -> float | None:
    return r.token_times_s[0] - r.sent_s if r.token_times_s and r.streamed else None


def tpot_s(r: RequestRecord) -> float | None:
    """Time per output token after the first: (last token − first token) / (tokens − 1)."""
    if len(r.token_times_s) < 2 or not r.streamed or r.output_tokens < 2:
        return None
    return (r.token_times_s[-1] - r.token_times_s[0]) / (r.output_tokens - 1)


def itl_s(r: RequestRecord) -> list[float]:
    t = r.token_times_s
    return [b - a for a, b in zip(t, t[1:])]


def meets(r: RequestRecord, slo: dict[str, float]) -> bool:
    """Completed, not truncated, and within every SLO (a request without the figure fails it)."""
    if not r.ok or r.truncated:
        return False
    figures = {
        "ttft": ttft_s(r),
        "tpot": tpot_s(r),
        "itl": percentile(itl_s(r), 99) if len(r.token_times_s) > 1 else None,
        "e2e": (r.end_s - r.sent_s) if r.end_s is not None else None,
    }
    for key, limit in slo.items():
        value = figures[key]
        if value is None or value > limit:
            return False
    return True


def tokens_in(r: RequestRecord, start_s: float, end_s: float) -> float:
    """Output tokens of `r` that arrived in [start_s, end_s]. Where the server's usage count differs
    from the stream's chunks (several tokens per chunk), each chunk carries usage/chunks tokens."""
    chunks = r.token_times_s
    if not chunks:
        return 0.0
    inside = sum(1 for t in chunks if start_s <= t <= end_s)
    return inside * (r.output_tokens / len(chunks))


def summarize(records: Sequence[RequestRecord], start_s: float, end_s: float, slo: dict[str, float]) -> dict[str, Any]:
    """Counts, throughput and latency of one level (no energy: the runner adds it)."""
    duration_s = max(end_s - start_s, 1e-9)
    measured = [r for r in records if r.measured]
    completed = [r for r in measured if r.ok]
    truncated = [r for r in completed if r.truncated]
    full = [r for r in completed if not r.truncated]
    failures = Counter(r.error for r in measured if r.error is not None)
    unfinished = sum(1 for r in measured if r.error is None and r.end_s is None)
    done_inside = [r for r in records if r.ok and r.end_s is not None and start_s <= r.end_s <= end_s]
    good_inside = [r for r in done_inside if meets(r, slo)]
    tokens = sum(tokens_in(r, start_s, end_s) for r in records)
    sources = Counter(r.tokens_source for r in completed)
    return {
        "duration_s": duration_s,
        "requests_sent": len(measured),
        "requests_completed": len(completed),
        "requests_failed": sum(failures.values()) + unfinished,
        "failures": dict(failures) | ({"unfinished": unfinished} if unfinished else {}),
        "requests_truncated": len(truncated),
        "truncated_tokens_mean": _mean([r.output_tokens for r in truncated]),
        "asked_tokens_mean": _mean([r.asked_tokens for r in measured]),
        "output_tokens_mean": _mean([r.output_tokens for r in completed]),
        # the lengths the server actually produced, truncated requests included
        "output_tokens_min": min((r.output_tokens for r in completed), default=None),
        "output_tokens_max": max((r.output_tokens for r in completed), default=None),
        "prompt_tokens_mean": _mean([r.usage_prompt_tokens for r in completed if r.usage_prompt_tokens is not None]),
        "tokens_source": dict(sources),
        "window_output_tokens": tokens,
        "window_requests_completed": len(done_inside),
        "window_requests_good": len(good_inside),
        "request_throughput_per_s": len(done_inside) / duration_s,
        "output_tokens_per_s": tokens / duration_s,
        "goodput_per_s": len(good_inside) / duration_s,
        # Share of the measured requests that met every SLO (completed, not truncated, within limits).
        "slo_attainment": _mean([1.0 if meets(r, slo) else 0.0 for r in measured]),
        "ttft_s": _stats([x for r in full if (x := ttft_s(r)) is not None]),
        "tpot_s": _stats([x for r in full if (x := tpot_s(r)) is not None]),
        "itl_s": _stats([x for r in full for x in itl_s(r)]),
        "e2e_s": _stats([r.end_s - r.sent_s for r in full if r.end_s is not None]),
        "schedule_lag_s": _stats([r.sent_s - r.scheduled_s for r in measured if r.scheduled_s is not None]),
    }


def energy_figures(summary: dict[str, Any], energy_j: float | None) -> dict[str, float | None]:
    """J per output token, per completed request and per goodput request of the window."""

    def per(count: float) -> float | None:
        return energy_j / count if energy_j is not None and count > 0 else None

    return {
        "j_per_output_token": per(summary["window_output_tokens"]),
        "j_per_request": per(summary["window_requests_completed"]),
        "j_per_good_request": per(summary["window_requests_good"]),
    }
