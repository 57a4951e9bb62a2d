"""When requests are sent at a given rate: Poisson arrivals (exponential gaps), gamma arrivals
(`burstiness` is the gamma shape: 1 is Poisson, below 1 burstier, above 1 more regular) or constant
spacing. The gaps are drawn from a seeded generator, so a level sends the same schedule every run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def arrival_offsets_s(rate: float, arrival: str, burstiness: float, seed: int) -> Iterator[float]:
    """Send times in seconds from the level's start, without end; the mean gap is 1/rate."""
    rng = random.Random(seed)
    t = 0.0
    while True:
        if arrival == "constant":
            gap = 1.0 / rate
        else:  # gamma with shape k and scale 1/(rate·k) has mean 1/rate; k = 1 is exponential
            gap = rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        t += gap
        yield t
