"""The work model fitted from request timelines alone, for servers that do not say what a step did."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .timeline import Timeline, pieces
from .work import WorkModel


@dataclass(frozen=True)
class WorkFit:
    model: WorkModel
    how: str  # what the coefficients came from

    def to_dict(self) -> dict[str, Any]:
        return {**self.model.to_dict(), "how": self.how}


def fit_work_model(timelines: Sequence[Timeline], bucket_s: float = 0.5, min_buckets: int = 8) -> WorkFit:
    """Fit a (per prompt token) and b (per decode token) from the timelines alone.

    While the server is busy, one second of time is one second of work: over every bucket of
    `bucket_s` in which some request was being worked on throughout, busy seconds ≈ a·P + b·D, with
    P and D the prompt and decode tokens the timelines place in it (each piece's tokens spread over
    its span). Least squares without intercept; c (attention) is not separable from b this way and
    is left at 0. Too few busy buckets, or a fit that gives a token no cost, falls back to a = b:
    every token weighs the same."""
    default = WorkFit(WorkModel(), "default: too few busy intervals to fit, every token weighs the same")
    unit = WorkModel()  # a = b = 1: a piece's work is its token count
    ps = [p for t in timelines if not t.problems() for p in pieces(t, unit)]
    if not ps:
        return default
    lo, hi = min(p.start_s for p in ps), max(p.end_s for p in ps)
    n = int((hi - lo) / bucket_s)
    if n < min_buckets:
        return default
    prompt, decode, busy = np.zeros(n), np.zeros(n), np.zeros(n)
    for p in ps:
        first, last = int((p.start_s - lo) / bucket_s), min(n - 1, int((p.end_s - lo) / bucket_s))
        for k in range(max(0, first), last + 1):
            u, v = lo + k * bucket_s, lo + (k + 1) * bucket_s
            overlap = max(0.0, min(v, p.end_s) - max(u, p.start_s))
            tokens = p.tokens * overlap / (p.end_s - p.start_s)
            (prompt if p.phase == "prefill" else decode)[k] += tokens
    # busy: covered throughout by some piece (a union of spans, measured per bucket)
    spans = sorted((p.start_s, p.end_s) for p in ps)
    merged: list[list[float]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    for s, e in merged:
        for k in range(max(0, int((s - lo) / bucket_s)), min(n - 1, int((e - lo) / bucket_s)) + 1):
            u, v = lo + k * bucket_s, lo + (k + 1) * bucket_s
            busy[k] += max(0.0, min(v, e) - max(u, s))
    full = busy >= 0.99 * bucket_s
    if full.sum() < min_buckets or prompt[full].sum() <= 0 or decode[full].sum() <= 0:
        return default
    x = np.stack([prompt[full], decode[full]], axis=1)
    coef, *_ = np.linalg.lstsq(x, busy[full], rcond=None)
    a, b = float(coef[0]), float(coef[1])
    if not (a > 0 and b > 0):
        return WorkFit(WorkModel(), f"default: the fit over {int(full.sum())} busy intervals gave a token no cost")
    return WorkFit(WorkModel.given(a, b, 0.0), f"fitted on {int(full.sum())} busy intervals of {bucket_s:g} s")
