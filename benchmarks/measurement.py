"""One timed run of a variant, and the steady rate read from its completion stamps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Measurement:
    variant: str
    images: int
    e2e_wall_s: float
    e2e_images_per_s: float
    steady_images_per_s: float | None
    steady_window_s: float
    stamps: int
    extra: dict = field(default_factory=dict)  # keys starting with "_" stay in memory, out of the results file


def steady_rate(stamps: list[tuple[float, int]]) -> tuple[float | None, float, float | None]:
    """Images/s over the second half of a run: the least-squares slope of cumulative images against time,
    over the stamps from the one that completes half the images to the last; its window in seconds; and
    the same slope over the first half, which comes out higher when a late-starting stage (a write worker
    importing the stack) first drains a backlog, a sign that the run was too short."""
    stamps = sorted(stamps)
    t = np.array([s for s, _ in stamps], dtype=np.float64)
    counts = np.cumsum([n for _, n in stamps]).astype(np.float64)
    if len(t) < 3:
        return None, 0.0, None
    half = int(np.searchsorted(counts, counts[-1] / 2))

    def slope(a: int, b: int) -> float | None:
        if b - a < 2 or t[b - 1] <= t[a]:
            return None
        return float(np.polyfit(t[a:b] - t[a], counts[a:b], 1)[0])

    return slope(half, len(t)), float(t[-1] - t[half]), slope(0, half + 1)


def rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)

