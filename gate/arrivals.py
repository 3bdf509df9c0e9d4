"""When each request is sent: fixed spacing or Poisson arrivals at a target rate, over a window."""

from __future__ import annotations

import math
import random
from typing import Literal

ArrivalProcess = Literal["poisson", "fixed"]


def arrival_count(rate: float, duration_s: float) -> int:
    """Requests the window offers: rate x duration, rounded up so the offered rate is never below it."""
    return max(1, math.ceil(rate * duration_s - 1e-9))


def arrival_times(process: ArrivalProcess, rate: float, duration_s: float, seed: int | None) -> list[float]:
    """Send offsets in seconds from the start, ascending, all inside [0, duration_s).

    Poisson arrivals are drawn conditioned on their count: given N arrivals in a window, a Poisson
    process places them uniformly at random. So a run offers exactly the target rate, yet bursts and
    gaps happen as they would with real users.
    """
    count = arrival_count(rate, duration_s)
    if process == "fixed":
        return [index / rate for index in range(count)]
    rng = random.Random(seed)
    return sorted(rng.uniform(0.0, duration_s) for _ in range(count))
