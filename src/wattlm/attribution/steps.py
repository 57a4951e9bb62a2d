"""Energy per request from engine steps: the meter's energy, split so that every joule goes to exactly one request or
to idle, and the parts add up to what the meter read.

1. Interval → steps. The meter is read at step boundaries: every `interval_s`, and whenever a
   request ends (so its energy is final when its response goes out). The energy E read over an
   interval of length T that holds engine steps of durations d_1..d_n goes E·d_i/T to step i; the
   rest, E·(T − Σd)/T, is *idle*: time with no active request, never charged to one.
2. Step → sequences. A step's energy is split among its sequences by their work weight
       w = a·prefill_tokens + b·decode_tokens + c·attended_positions
   where attended_positions sums, over the sequence's tokens in the step, how many cached positions
   each one attends to. a, b and c are the marginal costs of each kind of work, fitted by least
   squares to the server's own step timings, duration ≈ t0 + a·P + b·D + c·A (the fixed cost t0 of
   a step is shared in proportion to w). Until enough varied steps are seen, a = b (per token) and
   c = 0. Each sequence's share is split into its prefill part (a·P plus the attention of its prompt
   tokens) and its decode part (b·D plus the attention of its decode token).

Sequences with the same work in the same step get the same energy, by construction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .work import WorkModel


@dataclass
class RequestEnergy:
    """What one request has been charged so far."""

    prefill_j: float = 0.0
    decode_j: float = 0.0

    @property
    def total_j(self) -> float:
        return self.prefill_j + self.decode_j


@dataclass(frozen=True)
class Work:
    """One sequence's part of one step."""

    energy: RequestEnergy
    prefill_tokens: int = 0
    decode_tokens: int = 0
    prefill_attended: int = 0
    decode_attended: int = 0


@dataclass(frozen=True)
class StepEnergy:
    """A settled step, for the per-batch-size statistics."""

    duration_s: float
    energy_j: float
    seqs: int
    decode_seqs: int
    prefill_tokens: int


class Attributor:
    """Splits the meter's energy among steps and their sequences. `read()` returns the meter's
    (time_s, cumulative energy_j); it is called from the engine thread only."""

    def __init__(self, read: Callable[[], tuple[float, float]], model: WorkModel | None = None) -> None:
        self._read = read
        self.model = model or WorkModel()
        self._last_s, self._last_j = read()
        self._start_j = self._last_j
        self._steps: list[tuple[float, list[Work]]] = []
        self.idle_j = 0.0
        self.prefill_j = 0.0
        self.decode_j = 0.0
        self._lock = threading.Lock()  # totals() reads a consistent set while settle() runs elsewhere

    @property
    def last_read_s(self) -> float:
        return self._last_s

    @property
    def meter_j(self) -> float:
        """The meter's energy from the first read to the last settle."""
        return self._last_j - self._start_j

    def step(self, duration_s: float, work: list[Work]) -> None:
        prefill = sum(w.prefill_tokens for w in work)
        decode = sum(w.decode_tokens for w in work)
        attended = sum(w.prefill_attended + w.decode_attended for w in work)
        self.model.observe(prefill, decode, attended, duration_s)
        self._steps.append((duration_s, work))

    def totals(self) -> dict[str, float]:
        """Energy so far: what the meter read, and its split (prefill + decode + idle = meter)."""
        with self._lock:
            return {"meter": self.meter_j, "prefill": self.prefill_j, "decode": self.decode_j, "idle": self.idle_j}

    def settle(self) -> list[StepEnergy]:
        """Read the meter and charge the energy since the last read. Returns the steps settled."""
        with self._lock:
            return self._settle()

    def _settle(self) -> list[StepEnergy]:
        now_s, now_j = self._read()
        energy_j, span_s = now_j - self._last_j, now_s - self._last_s
        busy_s = sum(d for d, _ in self._steps)
        span_s = max(span_s, busy_s)  # steps lie inside the span; rounding must not create energy
        settled = []
        for duration_s, work in self._steps:
            step_j = energy_j * duration_s / span_s if span_s > 0 else energy_j / len(self._steps)
            settled.append(
                StepEnergy(
                    duration_s,
                    step_j,
                    len(work),
                    sum(w.decode_tokens > 0 for w in work),
                    sum(w.prefill_tokens for w in work),
                )
            )
            weights = [self.model.weights(w) for w in work]
            total_w = sum(p + d for p, d in weights)
            for w, (p, d) in zip(work, weights, strict=True):
                if total_w > 0:
                    share_p, share_d = step_j * p / total_w, step_j * d / total_w
                else:  # no weighed work: equal shares
                    share_p, share_d = 0.0, step_j / len(work)
                w.energy.prefill_j += share_p
                w.energy.decode_j += share_d
                self.prefill_j += share_p
                self.decode_j += share_d
        if not self._steps:
            self.idle_j += energy_j
        elif span_s > 0:
            self.idle_j += energy_j * (span_s - busy_s) / span_s
        self._steps.clear()
        self._last_s, self._last_j = now_s, now_j
        return settled
