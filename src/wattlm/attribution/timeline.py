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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .series import EnergySeries, RequestShare, Split
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

    @property
    def rate(self) -> float:
        return self.work / (self.end_s - self.start_s)


def pieces(t: Timeline, model: WorkModel) -> list[Piece]:
    """The pieces of work of one timeline (see the module's docstring). Without token times its
    decoding is one piece from the first token to the end (`split` may lay it along a pace)."""
    read = max(1, t.prompt_tokens - t.cached_tokens)  # a full cache hit still computes one token
    k = t.prompt_tokens - read
    start = t.prefill_start_s if t.prefill_start_s is not None else t.arrival_s
    out = [_piece(t.id, "prefill", start, t.first_token_s, model.prefill_work(read, k), read)]
    decode = t.output_tokens - 1  # the first token comes out of the last prompt-reading step
    if decode <= 0:
        return out
    times = [x for x in t.token_times_s if t.first_token_s - 1e-9 <= x <= t.end_s + 1e-9]
    if len(times) >= 2:
        edges, counts = _merge_short_gaps(times, decode / (len(times) - 1))
    else:
        edges, counts = [t.first_token_s, t.end_s], [float(decode)]
    done = 0.0
    for u, v, d in zip(edges, edges[1:], counts):
        if d <= 0:
            continue
        context = t.prompt_tokens + 1 + done
        out.append(_piece(t.id, "decode", u, v, model.decode_work(d, context), d))
        done += d
    return out


def _merge_short_gaps(times: list[float], per_gap: float) -> tuple[list[float], list[float]]:
    """Token times with gaps under MIN_PIECE_S merged into their neighbours (chunks a stream delivered
    together), so no piece has to be stretched past the request's last token."""
    edges, counts = [times[0]], [0.0]
    for v in times[1:]:
        counts[-1] += per_gap
        if v - edges[-1] >= MIN_PIECE_S:
            edges.append(v)
            counts.append(0.0)
    if counts[-1] > 0:  # a short tail: into the piece before it, or one piece to the end
        if len(edges) > 1:
            counts[-2] += counts[-1]
            edges[-1] = times[-1]
        else:
            edges.append(times[-1])
            return edges, counts
    return edges, counts[:-1]


def _piece(rid: str, phase: str, start: float, end: float, work: float, tokens: float) -> Piece:
    if end - start < MIN_PIECE_S:
        end = start + MIN_PIECE_S
    return Piece(rid, phase, start, end, max(work, 0.0), tokens)


PACE_ITERATIONS = 40


@dataclass(frozen=True)
class Pace:
    """The decode pace shared by the requests decoding at the same time: `rate[k]` on
    [edges[k], edges[k+1]], in steps per second up to a common factor; `ids` are placed on it."""

    edges: np.ndarray
    rate: np.ndarray
    ids: frozenset[str]

    def integral(self, start_s: np.ndarray, end_s: np.ndarray) -> np.ndarray:
        """∫ pace dt over each [start, end] (0 outside the edges)."""
        cum = np.concatenate([[0.0], np.cumsum(self.rate * np.diff(self.edges))])
        return np.interp(end_s, self.edges, cum) - np.interp(start_s, self.edges, cum)


def decode_pace(timelines: Sequence[Timeline]) -> Pace | None:
    """The pace of decoding, from the timelines without token times (None with fewer than two).

    A batching server decodes one token of every running sequence per step, so requests decoding
    at the same time advance at the same pace, and that pace drops while the server also reads
    prompts or runs a bigger batch. Time is cut at every decode span's edges and one pace found per
    piece of time such that each request's span holds its own token count: multiplicative updates
    from an even pace (each piece scaled by the geometric mean of the corrections its requests ask
    for), as iterative proportional fitting does. A request decoding alone keeps an even pace."""
    ds = [
        t for t in timelines if not t.token_times_s and t.output_tokens > 2 and t.end_s - t.first_token_s >= MIN_PIECE_S
    ]
    if len(ds) < 2:
        return None
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
        rate *= np.exp(np.clip(np.where(count > 0, np.cumsum(diff)[:k] / np.maximum(count, 1.0), 0.0), -30, 30))
        # timelines that contradict each other can drive a piece's pace towards 0; a request decoding
        # there still does some work, so the pace keeps a floor (a step never takes a thousand
        # times longer than the fastest) and that time is never idle
        rate = np.maximum(rate, 1e-3 * rate.max())
    return Pace(e, rate, frozenset(t.id for t in ds))


def split(
    timelines: Iterable[Timeline],
    series: EnergySeries,
    model: WorkModel,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Split:
    """Split the series' energy over [start_s, end_s] (default: all of it) among the timelines.

    Work outside the span gets no energy here (a request partly outside has `covered` < 1); the
    energy of the span goes wholly to requests and idle. Vectorised: every piece covers whole
    segments of one time grid, so a piece's energy is its rate times the sum over its segments of
    segment energy ÷ total rate (a prefix sum), and a paced piece's the same weighted by the pace."""
    if len(series.times_s) < 2:
        raise ValueError("an energy series needs at least two reads")
    lo = series.start_s if start_s is None else max(start_s, series.start_s)
    hi = series.end_s if end_s is None else min(end_s, series.end_s)
    timelines = list(timelines)
    pace = decode_pace(timelines)
    shares: dict[str, RequestShare] = {}
    flat: list[Piece] = []  # constant rate
    laid: list[Piece] = []  # a decode spread along the pace
    for t in timelines:
        share = shares.setdefault(t.id, RequestShare(t.id))
        for p in pieces(t, model):
            share.work += p.work
            (laid if pace is not None and p.phase == "decode" and t.id in pace.ids else flat).append(p)
    times = np.array(series.times_s)
    grid = [np.array([lo, hi]), times[(times > lo) & (times < hi)]]
    for group in (flat, laid):
        if group:
            ends = np.array([[p.start_s, p.end_s] for p in group]).ravel()
            grid.append(ends[(ends > lo) & (ends < hi)])
    if pace is not None:
        grid.append(pace.edges[(pace.edges > lo) & (pace.edges < hi)])
    g = np.unique(np.concatenate(grid))
    if len(g) < 2:
        return Split(lo, hi, 0.0, 0.0, shares, 0)
    cum_j = np.interp(g, times, np.array(series.energy_j))
    seg_j = np.diff(cum_j)
    n = len(seg_j)
    mid = (g[:-1] + g[1:]) / 2
    seg_pace = np.zeros(n)
    if pace is not None:
        k = np.searchsorted(pace.edges, mid) - 1
        ok = (k >= 0) & (k < len(pace.rate))
        seg_pace[ok] = pace.rate[k[ok]]

    def span(group: list[Piece]) -> tuple[np.ndarray, np.ndarray]:
        s = np.clip([p.start_s for p in group], lo, hi)  # a piece outside [lo, hi] covers no segment
        e = np.clip([p.end_s for p in group], lo, hi)
        return np.searchsorted(g, s), np.searchsorted(g, np.maximum(s, e))

    total = np.zeros(n + 1, dtype=np.longdouble)  # extended precision: rates differ by orders of magnitude
    active = np.zeros(n + 1, dtype=np.int64)  # pieces with work over each segment, counted exactly
    fs, fe = span(flat) if flat else (np.zeros(0, int), np.zeros(0, int))
    f_rate = np.array([p.rate for p in flat])
    ls, le = span(laid) if laid else (np.zeros(0, int), np.zeros(0, int))
    for starts, ends, weights in ((fs, fe, f_rate), (ls, le, np.array([p.work for p in laid]))):
        np.add.at(active, starts, (weights > 0).astype(np.int64))
        np.add.at(active, ends, -(weights > 0).astype(np.int64))
    if flat:
        np.add.at(total, fs, f_rate)
        np.add.at(total, fe, -f_rate)
    rate = np.cumsum(total)[:n].astype(float)
    l_kappa = np.zeros(0)
    if laid and pace is not None:
        whole = pace.integral(np.array([p.start_s for p in laid]), np.array([p.end_s for p in laid]))
        l_kappa = np.array([p.work for p in laid]) / np.maximum(whole, 1e-300)  # work per unit of pace
        kappa = np.zeros(n + 1)
        np.add.at(kappa, ls, l_kappa)
        np.add.at(kappa, le, -l_kappa)
        rate = rate + np.cumsum(kappa)[:n] * seg_pace
    # a sum of added and taken-away rates leaves rounding dust where nothing is active: only the
    # count says whether a segment is busy
    busy = (np.cumsum(active)[:n] > 0) & (rate > 0)
    q = np.where(busy, seg_j / np.where(busy, rate, 1.0), 0.0)
    q_cum = np.concatenate([[0.0], np.cumsum(q, dtype=np.longdouble)])
    qp_cum = np.concatenate([[0.0], np.cumsum(q * seg_pace, dtype=np.longdouble)])
    dt = np.diff(g)
    t_cum = np.concatenate([[0.0], np.cumsum(dt)])
    p_cum = np.concatenate([[0.0], np.cumsum(seg_pace * dt)])
    gap_cum = np.concatenate([[0], np.cumsum(_lost(series, g))])
    for p, s_, e_, r in zip(flat, fs, fe, f_rate):
        _charge(
            shares[p.id], p.phase, r * (q_cum[e_] - q_cum[s_]), r * (t_cum[e_] - t_cum[s_]), gap_cum[e_] > gap_cum[s_]
        )
    for p, s_, e_, kp in zip(laid, ls, le, l_kappa):
        _charge(
            shares[p.id],
            p.phase,
            kp * (qp_cum[e_] - qp_cum[s_]),
            kp * (p_cum[e_] - p_cum[s_]),
            gap_cum[e_] > gap_cum[s_],
        )
    # Idle is what no request was charged: the segments without work, and the rounding of the sums
    # above (a few parts in 1e9), so requests + idle = the series' energy exactly.
    energy_j = float(cum_j[-1] - cum_j[0])
    idle_j = energy_j - sum(r.energy_j for r in shares.values())
    return Split(lo, hi, energy_j, idle_j, shares, series.gaps_between(lo, hi))


def _charge(share: RequestShare, phase: str, energy_j: float, work_inside: float, lost: bool) -> None:
    if phase == "prefill":
        share.prefill_j += float(energy_j)
    else:
        share.decode_j += float(energy_j)
    share.work_inside += float(work_inside)
    share.partial = share.partial or bool(lost)


def _lost(series: EnergySeries, grid: np.ndarray) -> np.ndarray:
    """1 for each grid segment inside a read interval that was lost (its gap count rose), else 0."""
    times, gaps = np.array(series.times_s), np.array(series.gaps)
    rose = np.diff(gaps) > 0  # interval [times[i], times[i+1]] lost
    mid = (grid[:-1] + grid[1:]) / 2
    k = np.searchsorted(times, mid) - 1
    out = np.zeros(len(mid), dtype=int)
    ok = (k >= 0) & (k < len(rose))
    out[ok] = rose[k[ok]]
    return out
