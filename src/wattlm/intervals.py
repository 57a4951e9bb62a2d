"""Figures that survive a noisy machine: rotating run orders and paired ratios with bootstrap intervals.

On a shared machine the speed of the same call moves by tens of per cent between minutes, more than
most differences between variants. Two things make a comparison hold anyway:

- rounds in rotating order (A B C, B C A, C A B, ...): drift hits every variant alike, and each round
  gives one figure per variant measured within the same few minutes;
- paired ratios: per round, variant ÷ baseline, so what the machine did that round cancels out. The
  median of the ratios is the estimate; a percentile bootstrap over rounds (resample rounds with
  replacement, take the median, 2.5th and 97.5th percentiles) gives its 95 % interval. A ratio whose
  interval includes 1 is not resolved on that machine.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

RESAMPLES = 4000
LEVEL = 0.95


def rotation(items: Sequence[T], round_index: int) -> list[T]:
    """The order of round `round_index` (0-based): the items rotated left by that many places."""
    if not items:
        return []
    k = round_index % len(items)
    return [*items[k:], *items[:k]]


@dataclass(frozen=True)
class Interval:
    """The median of paired per-round ratios and its bootstrap interval (None with fewer than 2 rounds)."""

    median: float
    low: float | None
    high: float | None
    rounds: int

    @property
    def resolved(self) -> bool:
        """True when the interval lies wholly above or below 1."""
        return self.low is not None and self.high is not None and (self.low > 1.0 or self.high < 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "low": self.low,
            "high": self.high,
            "rounds": self.rounds,
            "level": LEVEL,
            "resolved": self.resolved,
        }


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default method)."""
    position = q * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def bootstrap_median(values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Median of `values` and a percentile-bootstrap interval of the median at LEVEL (seeded: the same
    values give the same interval)."""
    if not values:
        raise ValueError("no values to summarize")
    values = list(values)
    median = statistics.median(values)
    if len(values) < 2:
        return Interval(median, None, None, len(values))
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1.0 - LEVEL) / 2
    return Interval(median, _percentile(medians, tail), _percentile(medians, 1.0 - tail), n)


def paired_ratio(numerators: Sequence[float | None], denominators: Sequence[float | None]) -> Interval | None:
    """Per-round numerator ÷ denominator over the rounds where both are positive numbers, summarized by
    bootstrap_median; None when no round has both."""
    pairs = zip(numerators, denominators, strict=True)
    ratios = [n / d for n, d in pairs if n is not None and d is not None and n > 0 and d > 0]
    return bootstrap_median(ratios) if ratios else None
