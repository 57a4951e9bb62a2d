"""A price list: what a request of a given shape costs on one deployment.

    J ≈ α + β·prompt_tokens + γ·output_tokens

fitted by least squares over requests' attributed energy, with 95 % percentile-bootstrap intervals
(requests resampled with replacement, seeded). A length that did not vary over the requests cannot
be priced apart from α: its coefficient is left out (None) and the reason given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

RESAMPLES = 2000
MIN_REQUESTS = 8


def price_list(
    prompt_tokens: Sequence[float],
    output_tokens: Sequence[float],
    energy_j: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The fit and its intervals, or None with fewer than MIN_REQUESTS requests."""
    y = np.asarray(energy_j, dtype=float)
    if len(y) < MIN_REQUESTS:
        return None
    cols = {"prompt": np.asarray(prompt_tokens, dtype=float), "output": np.asarray(output_tokens, dtype=float)}
    varied = [k for k, v in cols.items() if np.ptp(v) > 0]
    x = np.column_stack([np.ones(len(y)), *[cols[k] for k in varied]])
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        if np.linalg.matrix_rank(x[idx]) < x.shape[1]:
            continue
        boots.append(np.linalg.lstsq(x[idx], y[idx], rcond=None)[0])
    b = np.array(boots) if boots else np.empty((0, x.shape[1]))
    names = ["alpha_j"] + [
        {"prompt": "beta_j_per_prompt_token", "output": "gamma_j_per_output_token"}[k] for k in varied
    ]
    out: dict[str, Any] = {
        "formula": "J ≈ alpha + beta·prompt_tokens + gamma·output_tokens",
        "requests": len(y),
        "alpha_j": None,
        "beta_j_per_prompt_token": None,
        "gamma_j_per_output_token": None,
        "interval95": {},
        "not_priced": [f"{k} length did not vary over the requests" for k in cols if k not in varied],
    }
    for i, name in enumerate(names):
        out[name] = float(coef[i])
        if len(b) >= 100:
            out["interval95"][name] = [float(np.percentile(b[:, i], 2.5)), float(np.percentile(b[:, i], 97.5))]
    pred = x @ coef
    ss = float(((y - y.mean()) ** 2).sum())
    out["r2"] = 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else None
    return out
