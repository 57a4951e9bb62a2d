"""The work model: how much of a server's time (and so of its energy) one piece of work takes.

    w = a·prompt_tokens + b·decode_tokens + c·attended_positions

a, b and c are marginal costs in seconds: a per prompt token read, b per token decoded, c per cached
position a token attends to. Both energy splits use it — over engine steps, where the server knows
every step (`steps.py`), and over request timelines seen from outside (`timeline.py`) — so a request
is weighed the same way whichever evidence there is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .steps import Work

MIN_FIT_STEPS = 32  # steps with prompt work and steps with decode work before the fit is trusted
REFIT_EVERY = 64


@dataclass
class WorkModel:
    """Marginal cost per prompt token (a), per decode token (b) and per attended position (c)."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    fitted: bool = False
    # Running sums of x·xᵀ and x·y for x = (1, P, D, A), y = duration: plain floats, because a
    # numpy call per step costs more than the arithmetic (this runs in the engine loop every step).
    _xtx: list[float] = field(default_factory=lambda: [0.0] * 16)
    _xty: list[float] = field(default_factory=lambda: [0.0] * 4)
    _seen: list[int] = field(default_factory=lambda: [0, 0, 0])  # steps with P > 0, D > 0, total

    def observe(self, prefill: int, decode: int, attended: int, duration_s: float) -> None:
        x = (1.0, float(prefill), float(decode), float(attended))
        xtx, xty = self._xtx, self._xty
        for i in range(4):
            xi = x[i]
            xty[i] += xi * duration_s
            for j in range(i, 4):
                xtx[4 * i + j] += xi * x[j]
        self._seen[0] += prefill > 0
        self._seen[1] += decode > 0
        self._seen[2] += 1
        if min(self._seen[:2]) >= MIN_FIT_STEPS and self._seen[2] % REFIT_EVERY == 0:
            self._fit()

    def _fit(self) -> None:
        upper = np.array(self._xtx).reshape(4, 4)
        xtx = np.triu(upper) + np.triu(upper, 1).T
        ridge = 1e-9 * np.trace(xtx) * np.eye(4)
        t0, a, b, c = np.linalg.solve(xtx + ridge, np.array(self._xty))
        if a > 0 and b > 0:  # a fit that says a token costs nothing is noise; keep the last good one
            self.a, self.b, self.c, self.fitted = float(a), float(b), float(max(c, 0.0)), True

    def weights(self, w: Work) -> tuple[float, float]:
        """(prefill weight, decode weight) of one sequence's work."""
        return (
            self.a * w.prefill_tokens + self.c * w.prefill_attended,
            self.b * w.decode_tokens + self.c * w.decode_attended,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "a_s_per_prompt_token": self.a,
            "b_s_per_decode_token": self.b,
            "c_s_per_attended": self.c,
            "fitted": self.fitted,
            "steps": self._seen[2],
        }

    @classmethod
    def given(cls, a: float, b: float, c: float = 0.0) -> WorkModel:
        """Coefficients taken from elsewhere (a measured run); refitting never replaces them."""
        return cls(a=a, b=b, c=c, fitted=True)

    def prefill_work(self, tokens: int, start_pos: int = 0) -> float:
        """Weight of reading `tokens` prompt tokens after `start_pos` cached ones: each attends to the
        cached positions and to those before it."""
        n = tokens
        return self.a * n + self.c * (n * start_pos + n * (n + 1) / 2)

    def decode_work(self, tokens: float, context: float) -> float:
        """Weight of decoding `tokens` tokens after `context` positions (prompt plus the first token)."""
        d = tokens
        return self.b * d + self.c * (d * context + d * (d + 1) / 2)


def work_model_from(data: dict[str, Any]) -> WorkModel:
    """A work model from `WorkModel.to_dict()` (a `wattlm serve` /stats answer or a ledger)."""
    try:
        a, b = float(data["a_s_per_prompt_token"]), float(data["b_s_per_decode_token"])
        c = float(data.get("c_s_per_attended", 0.0))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a work model ({e}): expected a_s_per_prompt_token, b_s_per_decode_token") from e
    if not (a > 0 and b > 0 and c >= 0):
        raise ValueError(f"a work model needs a > 0, b > 0, c >= 0, got a={a}, b={b}, c={c}")
    return WorkModel.given(a, b, c)
