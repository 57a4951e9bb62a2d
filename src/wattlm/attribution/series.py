"""A host's energy as a time series: cumulative joules read at increasing times, and what a split of
it gives each request."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any


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
