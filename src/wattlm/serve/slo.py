"""Energy-aware batch sizing: with `--slo-tpot S`, the scheduler caps the number of sequences it
decodes together at the size whose measured time per output token meets S while its energy per
decode token is lowest. Both are learnt per batch size — the number of sequences in a step, decoding
or reading their prompt, which is what the cap limits — from the server's own steps: the duration of
the steps that produced tokens is the members' TPOT (prompt chunks read beside them included, as the
clients see it), and the steps' energy ÷ their output tokens is J per output token (prompt-reading
steps included, since a batch of that size pays for them).

A size not yet measured is tried when the largest measured size meets the SLO, so the cap can grow;
sizes never reached under the current load are simply not known yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_SAMPLES = 8
DECAY = 0.01  # exponential moving averages over ~100 steps: recent steps count most (the speed drifts), and a
# step that also reads a prompt (far longer) weighs in as often as clients meet one


@dataclass
class SizeStats:
    """Averages over the steps that ran with this many sequences in the batch."""

    steps: int = 0
    tpot_s: float = 0.0  # over steps that produced tokens: the time between a client's tokens
    energy_j: float = 0.0
    tokens: float = 0.0
    decode_only_steps: int = 0  # steps with no prompt chunk: the engine's own decode speed, for reports
    decode_only_tpot_s: float = 0.0
    _token_steps: int = 0

    @property
    def j_per_token(self) -> float:
        return self.energy_j / self.tokens if self.tokens else 0.0

    def add(self, duration_s: float, energy_j: float, decode_tokens: int, prefill_tokens: int) -> None:
        self.steps += 1
        k = max(DECAY, 1.0 / self.steps)
        self.energy_j += k * (energy_j - self.energy_j)
        self.tokens += k * (decode_tokens - self.tokens)
        if decode_tokens:
            self._token_steps += 1
            k = max(DECAY, 1.0 / self._token_steps)
            self.tpot_s += k * (duration_s - self.tpot_s)
        if decode_tokens and not prefill_tokens:
            self.decode_only_steps += 1
            k = max(DECAY, 1.0 / self.decode_only_steps)
            self.decode_only_tpot_s += k * (duration_s - self.decode_only_tpot_s)


@dataclass
class BatchSizer:
    max_batch: int
    slo_tpot_s: float | None = None
    sizes: dict[int, SizeStats] = field(default_factory=dict)
    cap: int = 0
    reason: str = ""

    def __post_init__(self) -> None:
        self.cap = self.max_batch
        self.reason = "no --slo-tpot: the batch may fill every slot"

    def add(self, seqs: int, duration_s: float, energy_j: float, decode_tokens: int, prefill_tokens: int) -> None:
        """One settled step of `seqs` sequences (the batch the cap limits), `decode_tokens` of them
        decoding and `prefill_tokens` prompt tokens read beside them."""
        self.sizes.setdefault(seqs, SizeStats()).add(duration_s, energy_j, decode_tokens, prefill_tokens)
        if self.slo_tpot_s is not None:
            self._choose()

    def _choose(self) -> None:
        assert self.slo_tpot_s is not None
        known = {b: s for b, s in self.sizes.items() if s._token_steps >= MIN_SAMPLES}
        meeting = {b: s for b, s in known.items() if s.tpot_s <= self.slo_tpot_s}
        if not meeting:
            smallest = min(known, default=1)
            self.cap = max(1, smallest)
            self.reason = (
                f"no measured batch size meets TPOT ≤ {self.slo_tpot_s:g} s; running the smallest ({self.cap})"
            )
            return
        best = min(meeting, key=lambda b: meeting[b].j_per_token)
        self.cap, s = best, meeting[best]
        self.reason = (
            f"batch {best}: TPOT {s.tpot_s * 1e3:.1f} ms ≤ {self.slo_tpot_s * 1e3:g} ms at the lowest J/token"
            f" ({s.j_per_token:.3g} J) of the sizes measured"
        )
        largest = max(known)
        if best == largest and largest < self.max_batch and (largest + 1) not in known:
            self.cap = largest + 1
            self.reason += f"; trying {largest + 1}, not yet measured"

    def table(self) -> list[dict[str, float]]:
        return [
            {
                "batch_size": b,
                "steps": s.steps,
                "tpot_s": s.tpot_s,
                "j_per_token": s.j_per_token,
                "decode_only_steps": s.decode_only_steps,
                "decode_only_tpot_s": s.decode_only_tpot_s,
            }
            for b, s in sorted(self.sizes.items())
        ]
