"""Energy per request from request timelines: for servers that do not say what each step did.

A timeline is what can be seen of one request from outside the engine: when it arrived, when the
server started reading its prompt (where the server says so; else the arrival), when its first token
came, each later token's time (where streamed; else only the end), and its token counts. The energy
comes as a series of cumulative joules at timestamps, one series per host.

The split, per host:

1. Each request is cut into *pieces* of work, each spread evenly over its time span:
   - prompt reading, [prefill start, first token]: w = a·n + c·(n·k + n(n+1)/2) for n = prompt − cached
     tokens read after k = cached ones;
   - decoding, one piece per gap between streamed tokens: w = b·d + c·(attention of those d tokens),
     d = the tokens decoded in the gap. Without token times (a span, an unstreamed answer) the
     tokens are placed along the pace shared by the requests decoding beside it (`decode_pace`).
   A piece's *rate* is its work ÷ its duration (server-seconds of work per second).
2. Time is cut at every piece edge and every energy reading. The energy of a segment [u, v] is the
   series' cumulative energy at v minus that at u (linear between readings: constant power between
   two reads). It goes to the pieces active over the whole segment in proportion to their rates; a
   segment with no active piece (or only zero-rate ones) is *idle*.

So requests + idle = the energy the series read over the span, exactly, and two requests with the
same work at the same time get the same energy. a, b, c are the work model's (`work.py`): by
default a = b (a prompt token and a decoded token in the same step go through the same weights),
given (a `wattlm serve` run's fit), or fitted here from the timelines (`fit_work_model`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .work import WorkModel

MIN_PIECE_S = 1e-3  # a phase reported with no duration still does its work over a millisecond


@dataclass(frozen=True)
class Timeline:
    """One request as seen from outside the engine; times in seconds on one clock."""

    id: str
    arrival_s: float
    first_token_s: float  # the end of prompt reading
    end_s: float
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    prefill_start_s: float | None = None  # None: unknown, prompt reading is taken from the arrival
    token_times_s: tuple[float, ...] = ()  # each streamed chunk's time, where known
    host: str = ""
    source: str = "client"  # client | server-timings | spans

    def problems(self) -> str:
        """Why this timeline cannot be attributed, or ''."""
        if self.output_tokens < 1:
            return "no output token: nothing says when the request was worked on"
        if self.prompt_tokens < 1:
            return "no prompt token count"
        if not self.arrival_s <= self.first_token_s <= self.end_s:
            return "times out of order (arrival ≤ first token ≤ end does not hold)"
        if self.prefill_start_s is not None and not self.arrival_s - 1e-6 <= self.prefill_start_s <= self.first_token_s:
            return "prompt reading starts before arrival or after the first token"
        return ""


@dataclass(frozen=True)
class Piece:
    id: str
    phase: str  # prefill | decode
    start_s: float
    end_s: float
    work: float
    tokens: float
    attended: float

    @property
    def rate(self) -> float:
        return self.work / (self.end_s - self.start_s)


Pace = tuple[Sequence[float], Sequence[float]]  # (edges, decode tokens between each two edges)


def pieces(t: Timeline, model: WorkModel, pace: Pace | None = None) -> list[Piece]:
    """The pieces of work of one timeline (see the module's docstring); `pace` places the decode
    tokens of a timeline without token times (see `decode_pace`)."""
    read = max(1, t.prompt_tokens - t.cached_tokens)  # a full cache hit still computes one token
    k = t.prompt_tokens - read
    start = t.prefill_start_s if t.prefill_start_s is not None else t.arrival_s
    out = [
        _piece(
            t.id, "prefill", start, t.first_token_s, model.prefill_work(read, k), read, read * k + read * (read + 1) / 2
        )
    ]
    decode = t.output_tokens - 1  # the first token comes out of the last prompt-reading step
    if decode <= 0:
        return out
    times = [x for x in t.token_times_s if t.first_token_s - 1e-9 <= x <= t.end_s + 1e-9]
    if len(times) >= 2:
        edges, counts = times, [decode / (len(times) - 1)] * (len(times) - 1)
    elif pace is not None:
        edges, counts = list(pace[0]), list(pace[1])
    else:
        edges, counts = [t.first_token_s, t.end_s], [float(decode)]
    done = 0.0
    for u, v, d in zip(edges, edges[1:], counts):
        if d <= 0:
            continue
        context = t.prompt_tokens + 1 + done
        out.append(_piece(t.id, "decode", u, v, model.decode_work(d, context), d, d * context))
        done += d
    return out


PACE_ITERATIONS = 40


def decode_pace(timelines: Sequence[Timeline]) -> dict[str, Pace]:
    """Where the decode tokens of timelines without token times fell, from the requests decoding
    beside them.

    A batching server decodes one token of every running sequence per step, so requests decoding
    at the same time advance at the same pace, and that pace drops while the server also reads
    prompts or runs a bigger batch. Cut time at every decode span's edges; find one pace per piece
    of time such that each request's decode span holds its own token count: multiplicative
    updates from an even pace (each piece scaled by the geometric mean of the corrections its
    requests ask for), as iterative proportional fitting does. A request alone keeps an even pace."""
    ds = [t for t in timelines if not t.token_times_s and t.output_tokens > 2 and t.end_s > t.first_token_s]
    if len(ds) < 2:
        return {}
    e = np.unique(np.array([x for t in ds for x in (t.first_token_s, t.end_s)]))
    dt = np.diff(e)
    i0 = np.searchsorted(e, [t.first_token_s for t in ds])
    i1 = np.searchsorted(e, [t.end_s for t in ds])
    need = np.array([t.output_tokens - 1 for t in ds], dtype=float)
    k = len(dt)
    covered = np.zeros(k + 1)
    np.add.at(covered, i0, 1.0)
    np.add.at(covered, i1, -1.0)
    count = np.cumsum(covered)[:k]
    rate = np.ones(k)
    for _ in range(PACE_ITERATIONS):
        cum = np.concatenate([[0.0], np.cumsum(rate * dt)])
        log_f = np.log(need / np.maximum(cum[i1] - cum[i0], 1e-300))
        diff = np.zeros(k + 1)
        np.add.at(diff, i0, log_f)
        np.add.at(diff, i1, -log_f)
        rate *= np.exp(np.where(count > 0, np.cumsum(diff)[:k] / np.maximum(count, 1.0), 0.0))
    steps = rate * dt
    out: dict[str, Pace] = {}
    for t, a, b, n in zip(ds, i0, i1, need):
        part = steps[a:b]
        total = part.sum()
        out[t.id] = (e[a : b + 1].tolist(), (n * part / total).tolist() if total > 0 else [n / len(part)] * len(part))
    return out


def _piece(rid: str, phase: str, start: float, end: float, work: float, tokens: float, attended: float) -> Piece:
    if end - start < MIN_PIECE_S:
        end = start + MIN_PIECE_S
    return Piece(rid, phase, start, end, max(work, 0.0), tokens, attended)


@dataclass
class EnergySeries:
    """Cumulative energy (J) read at increasing times on one host; `gaps` counts the reads whose
    interval was lost (an exporter that did not answer), cumulatively, as `Reading.gaps` does."""

    times_s: list[float] = field(default_factory=list)
    energy_j: list[float] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)

    def add(self, time_s: float, energy_j: float, gaps: int = 0) -> None:
        if self.times_s and time_s <= self.times_s[-1]:
            return  # the same instant read twice: keep the first
        self.times_s.append(time_s)
        self.energy_j.append(max(energy_j, self.energy_j[-1]) if self.energy_j else energy_j)
        self.gaps.append(gaps)

    @property
    def start_s(self) -> float:
        return self.times_s[0]

    @property
    def end_s(self) -> float:
        return self.times_s[-1]

    def at(self, time_s: float) -> float:
        """Cumulative energy at `time_s` (linear between reads), inside [start_s, end_s]."""
        i = bisect.bisect_left(self.times_s, time_s)
        if i < len(self.times_s) and self.times_s[i] == time_s:
            return self.energy_j[i]
        if i == 0 or i == len(self.times_s):
            raise ValueError(f"{time_s} lies outside the series [{self.start_s}, {self.end_s}]")
        t0, t1 = self.times_s[i - 1], self.times_s[i]
        j0, j1 = self.energy_j[i - 1], self.energy_j[i]
        return j0 + (j1 - j0) * (time_s - t0) / (t1 - t0)

    def gaps_between(self, start_s: float, end_s: float) -> int:
        """Lost intervals that overlap [start_s, end_s]."""
        i = bisect.bisect_right(self.times_s, start_s)
        j = bisect.bisect_left(self.times_s, end_s)
        j = min(j, len(self.times_s) - 1)
        before = self.gaps[i - 1] if i > 0 else 0
        return self.gaps[j] - before

    def trim(self, before_s: float) -> None:
        """Forget reads older than the last one at or before `before_s` (a bounded buffer)."""
        i = bisect.bisect_right(self.times_s, before_s) - 1
        if i > 0:
            del self.times_s[:i], self.energy_j[:i], self.gaps[:i]


@dataclass
class RequestShare:
    id: str
    prefill_j: float = 0.0
    decode_j: float = 0.0
    work: float = 0.0  # all of the request's work
    work_inside: float = 0.0  # the part that lay inside the split's span
    partial: bool = False  # an interval it overlaps lost readings

    @property
    def energy_j(self) -> float:
        return self.prefill_j + self.decode_j

    @property
    def covered(self) -> float:
        """The share of the request's work inside the span (1: all of its energy is counted)."""
        return self.work_inside / self.work if self.work > 0 else 0.0


@dataclass
class Split:
    start_s: float
    end_s: float
    energy_j: float  # what the series read over [start_s, end_s]
    idle_j: float
    requests: dict[str, RequestShare]
    gaps: int = 0

    @property
    def requests_j(self) -> float:
        return sum(r.energy_j for r in self.requests.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "energy_j": self.energy_j,
            "requests_j": self.requests_j,
            "idle_j": self.idle_j,
            "requests": len(self.requests),
            "gaps": self.gaps,
        }


def split(
    timelines: Iterable[Timeline],
    series: EnergySeries,
    model: WorkModel,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Split:
    """Split the series' energy over [start_s, end_s] (default: all of it) among the timelines.

    Work outside the span gets no energy here (a request partly outside has `covered` < 1); the
    energy of the span goes wholly to requests and idle."""
    if len(series.times_s) < 2:
        raise ValueError("an energy series needs at least two reads")
    lo = series.start_s if start_s is None else max(start_s, series.start_s)
    hi = series.end_s if end_s is None else min(end_s, series.end_s)
    shares: dict[str, RequestShare] = {}
    all_pieces: list[Piece] = []
    timelines = list(timelines)
    paces = decode_pace(timelines)
    for t in timelines:
        ps = pieces(t, model, paces.get(t.id))
        share = shares.setdefault(t.id, RequestShare(t.id))
        for p in ps:
            share.work += p.work
            overlap = max(0.0, min(p.end_s, hi) - max(p.start_s, lo))
            share.work_inside += p.work * overlap / (p.end_s - p.start_s)
            if p.end_s > lo and p.start_s < hi:
                all_pieces.append(p)
    cuts = {lo, hi}
    cuts.update(x for x in series.times_s if lo < x < hi)
    for p in all_pieces:
        cuts.update(x for x in (p.start_s, p.end_s) if lo < x < hi)
    edges = sorted(cuts)
    by_start = sorted(all_pieces, key=lambda p: p.start_s)
    active: dict[int, Piece] = {}
    nxt = 0
    idle = 0.0
    j_prev = series.at(lo)
    for u, v in zip(edges, edges[1:]):
        while nxt < len(by_start) and by_start[nxt].start_s <= u:
            active[nxt] = by_start[nxt]
            nxt += 1
        for i in [i for i, p in active.items() if p.end_s <= u]:
            del active[i]
        j_next = series.at(v)
        energy = j_next - j_prev
        j_prev = j_next
        rates = [(p, p.rate) for p in active.values()]
        total = sum(r for _, r in rates)
        if total <= 0:
            idle += energy
            continue
        for p, r in rates:
            share = shares[p.id]
            if p.phase == "prefill":
                share.prefill_j += energy * r / total
            else:
                share.decode_j += energy * r / total
    gaps = series.gaps_between(lo, hi)
    if gaps:
        for p in all_pieces:
            if series.gaps_between(max(p.start_s, lo), min(p.end_s, hi)):
                shares[p.id].partial = True
    return Split(lo, hi, series.at(hi) - series.at(lo), idle, shares, gaps)


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
