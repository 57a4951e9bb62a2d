"""Energy-aware batch sizing: with `--slo-tpot S`, the scheduler caps the number of sequences it
decodes together at the size whose measured time per output token meets S while its energy per
decode token is lowest. Both are learnt per batch size from the server's own steps that decode
(a step's duration is every member's TPOT for that token, prompt chunks read beside them included,
as the clients see it; its energy ÷ its decoding sequences is J per output token).

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
    steps: int = 0
    tpot_s: float = 0.0
    j_per_token: float = 0.0
    decode_only_steps: int = 0  # steps with no prompt chunk: the engine's own decode speed, for reports
    decode_only_tpot_s: float = 0.0

    def add(self, tpot_s: float, j_per_token: float, decode_only: bool) -> None:
        self.steps += 1
        k = max(DECAY, 1.0 / self.steps)
        self.tpot_s += k * (tpot_s - self.tpot_s)
        self.j_per_token += k * (j_per_token - self.j_per_token)
        if decode_only:
            self.decode_only_steps += 1
            k = max(DECAY, 1.0 / self.decode_only_steps)
            self.decode_only_tpot_s += k * (tpot_s - self.decode_only_tpot_s)


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

    def add(self, decode_seqs: int, duration_s: float, energy_j: float, prefill_tokens: int = 0) -> None:
        """One settled step in which `decode_seqs` sequences decoded (and `prefill_tokens` were read)."""
        stats = self.sizes.setdefault(decode_seqs, SizeStats())
        stats.add(duration_s, energy_j / decode_seqs, prefill_tokens == 0)
        if self.slo_tpot_s is not None:
            self._choose()

    def _choose(self) -> None:
        assert self.slo_tpot_s is not None
        known = {b: s for b, s in self.sizes.items() if s.steps >= MIN_SAMPLES}
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
