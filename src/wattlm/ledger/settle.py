"""Settling: each host's energy split among the requests whose spans overlap it, once all of them can
have arrived.

A server exports a request's span when the request ends, and an exporter batches spans for a few
seconds more. So the ledger waits: the *watermark* of a host is now − settle_s (and never past its
last energy reading), and the interval from the last settled time up to the watermark is split
(`attribution.timeline.split`) among the spans received for it. Every joule of the interval goes to
a request or to idle, once: a request's parts over several intervals add up to its line.

A span that arrives for time already settled cannot be charged without charging its energy twice:
it is written `unattributed` with the reason (raise --settle-s above the longest request plus the
export delay), and so is a span that started before the ledger read energy, ends in the future
(the host's clock runs ahead), or names a host with no energy source. Nothing is dropped silently.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..attribution.fit import fit_work_model
from ..attribution.timeline import Timeline, split
from ..attribution.work import WorkModel
from ..jsonlog import Ledger
from .hosts import Host, Hosts
from .spans import Mapped

MAX_SKEW_S = 5.0  # a span may end this far past the ledger's clock before it counts as from the future
MAX_PENDING = 200_000  # spans waiting to settle, over all hosts; beyond it new ones are refused
REFIT_S = 30.0
RECENT = 4000  # settled timelines kept per host for the work-model fit
SEEN = 1_000_000  # ids remembered against an exporter's retries (the oldest are forgotten first)


class SeenIds:
    """The ids already written, the most recent SEEN of them (a retried export comes within minutes)."""

    def __init__(self, ids: list[str] | set[str] = ()) -> None:  # type: ignore[assignment]
        self._ids: dict[str, None] = dict.fromkeys(ids)

    def __contains__(self, rid: object) -> bool:
        return rid in self._ids

    def add(self, rid: str) -> None:
        self._ids[rid] = None
        if len(self._ids) > SEEN:
            del self._ids[next(iter(self._ids))]

    def __len__(self) -> int:
        return len(self._ids)


def _iso(wall_s: float) -> str:
    return datetime.fromtimestamp(wall_s, UTC).isoformat(timespec="milliseconds")


@dataclass
class Pending:
    mapped: Mapped
    host: Host
    prefill_j: float = 0.0
    decode_j: float = 0.0
    partial: str = ""

    @property
    def timeline(self) -> Timeline:
        assert self.mapped.timeline is not None
        return self.mapped.timeline


@dataclass
class HostState:
    settled_to: float
    pending: dict[str, Pending] = field(default_factory=dict)
    recent: deque[Timeline] = field(default_factory=lambda: deque(maxlen=RECENT))
    model: WorkModel = field(default_factory=WorkModel)
    model_how: str = "default: a prompt token and a decoded token weigh the same (a = b, c = 0)"
    fitted_at: float = 0.0


class Settler:
    def __init__(
        self,
        hosts: Hosts,
        ledger: Ledger,
        seen: SeenIds,
        *,
        settle_s: float,
        model: WorkModel | None = None,
        fit: bool = False,
        clock: Callable[[], float] = time.time,
        on_request: Callable[[dict[str, Any]], None] = lambda line: None,
        on_interval: Callable[[dict[str, Any]], None] = lambda line: None,
    ) -> None:
        self.hosts, self.ledger, self.seen = hosts, ledger, seen
        self.settle_s, self.given, self.fit = settle_s, model, fit
        self.clock = clock
        self.on_request, self.on_interval = on_request, on_interval
        self.started_s = clock()
        self.state = {name: HostState(self.started_s) for name in hosts.hosts}
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return sum(len(s.pending) for s in self.state.values())

    # -- spans in ------------------------------------------------------------------------------

    def add(self, mapped: Mapped, span_host: str) -> str:
        """Take one request span; returns what became of it: pending, duplicate or unattributed."""
        t = mapped.timeline
        with self._lock:
            rid = t.id if t is not None else None
            if rid is not None and (rid in self.seen or any(rid in s.pending for s in self.state.values())):
                self.counts["duplicate"] += 1
                return "duplicate"
            if t is None:
                return self._unattributed(mapped, None, span_host, mapped.reason)
            host = self.hosts.of(span_host)
            if host is None:
                names = ", ".join(self.hosts.hosts)
                return self._unattributed(
                    mapped,
                    None,
                    span_host,
                    f"no_host: no energy source for host {span_host!r} (energy hosts: {names}; map it with --host-map)",
                )
            state = self.state[host.name]
            now = self.clock()
            if t.arrival_s < self.started_s:
                return self._unattributed(
                    mapped, host, span_host, "before_start: the request began before the ledger read energy"
                )
            if t.arrival_s < state.settled_to:
                return self._unattributed(
                    mapped,
                    host,
                    span_host,
                    f"late: arrived after its interval was settled ({state.settled_to - t.arrival_s:.1f} s too late for"
                    f" --settle-s {self.settle_s:g}; raise it above the longest request plus the export delay)",
                )
            if t.end_s > now + MAX_SKEW_S:
                return self._unattributed(
                    mapped,
                    host,
                    span_host,
                    f"future: ends {t.end_s - now:.1f} s after the ledger's clock (clock skew?)",
                )
            if self.pending >= MAX_PENDING:
                return self._unattributed(mapped, host, span_host, "overloaded: too many spans waiting to settle")
            state.pending[t.id] = Pending(mapped, host)
            self.counts["pending"] += 1
            return "pending"

    def _unattributed(self, mapped: Mapped, host: Host | None, span_host: str, reason: str) -> str:
        t = mapped.timeline
        line = self._line(mapped, host, span_host, status="unattributed", reason=reason)
        if t is not None:
            self.seen.add(t.id)
        self.ledger.write(line)
        self.counts["unattributed"] += 1
        self.on_request(line)
        return "unattributed"

    # -- settling ------------------------------------------------------------------------------

    def tick(self, final: bool = False) -> None:
        """Settle every host up to its watermark (up to its last reading when `final`)."""
        with self._lock:
            now = self.clock()
            for name, host in self.hosts.hosts.items():
                self._settle(host, self.state[name], now, final)
                if final:  # what no reading covers any more is written, not dropped
                    for p in list(self.state[name].pending.values()):
                        del self.state[name].pending[p.timeline.id]
                        self._unattributed(
                            p.mapped,
                            host,
                            p.timeline.host,
                            "stopped: the ledger stopped before any energy reading after it",
                        )

    def _model(self, state: HostState, now: float) -> tuple[WorkModel, str]:
        if self.given is not None:
            return self.given, "given"
        if self.fit and now - state.fitted_at >= REFIT_S and state.recent:
            fit = fit_work_model(list(state.recent))
            state.model, state.model_how, state.fitted_at = fit.model, fit.how, now
        return state.model, state.model_how

    def _settle(self, host: Host, state: HostState, now: float, final: bool) -> None:
        with host.lock:
            series = host.series
            if len(series.times_s) < 2:
                return
            lo = max(state.settled_to, series.start_s)
            hi = series.end_s if final else min(now - self.settle_s, series.end_s)
            if hi <= lo:
                return
            # spans that begin after the watermark have no work in [lo, hi]: they wait for a later tick
            pend = [p for p in state.pending.values() if p.timeline.arrival_s < hi]
            model, how = self._model(state, now)
            res = split([p.timeline for p in pend], series, model, lo, hi)
            series.trim(hi)
        for p in pend:
            share = res.requests[p.timeline.id]
            p.prefill_j += share.prefill_j
            p.decode_j += share.decode_j
            if share.partial and not p.partial:
                p.partial = "an energy reading it overlaps was lost (the exporter did not answer)"
        interval = {
            "kind": "interval",
            "host": host.name,
            "start": _iso(lo),
            "end": _iso(hi),
            "start_s": lo,
            "end_s": hi,
            "energy_j": res.energy_j,
            "requests_j": res.requests_j,
            "idle_j": res.idle_j,
            "requests": len(pend),
            "status": "partial" if res.gaps else "ok",
            "reason": f"{res.gaps} energy reading(s) lost: the exporter did not answer" if res.gaps else "",
            "work_model": {**model.to_dict(), "how": how},
            "provenance": host.provenance,
        }
        self.ledger.write(interval)
        self.on_interval(interval)
        state.settled_to = hi
        for p in pend:
            t = p.timeline
            if t.end_s <= hi or final:
                del state.pending[t.id]
                state.recent.append(t)
                status, reason = ("partial", p.partial) if p.partial else ("ok", "")
                if t.end_s > hi:
                    status, reason = "partial", "the ledger stopped before the request's span was settled to its end"
                line = self._line(p.mapped, host, t.host, status=status, reason=reason)
                line.update(energy_j=p.prefill_j + p.decode_j, prefill_j=p.prefill_j, decode_j=p.decode_j)
                self.seen.add(t.id)
                self.ledger.write(line)
                self.counts[status] += 1
                self.on_request(line)

    def _line(self, mapped: Mapped, host: Host | None, span_host: str, *, status: str, reason: str) -> dict[str, Any]:
        t = mapped.timeline
        line: dict[str, Any] = {
            "kind": "request",
            "id": t.id if t is not None else None,
            "status": status,
            "reason": reason,
            "host": host.name if host is not None else None,
            "span_host": span_host,
            "model": mapped.model,
            "labels": mapped.labels,
            "energy_j": None,
            "prefill_j": None,
            "decode_j": None,
            "provenance": host.provenance if host is not None else None,
            "timeline_source": "spans",
        }
        if t is not None:
            line.update(
                arrival=_iso(t.arrival_s),
                prompt_tokens=t.prompt_tokens,
                cached_prompt_tokens=t.cached_tokens,
                output_tokens=t.output_tokens,
                timeline={
                    "arrival_s": t.arrival_s,
                    "prefill_start_s": t.prefill_start_s,
                    "first_token_s": t.first_token_s,
                    "end_s": t.end_s,
                },
            )
        return line
