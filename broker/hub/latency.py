"""How long queued deliveries waited: a fixed-bucket histogram, read at scrape time.

Kept apart from the subscriber that feeds it: ``/metrics`` and the engines read it too.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

__all__ = ["LatencyHistogram"]


class LatencyHistogram:
    """How long queued frames waited before the kernel took them (fixed buckets).

    Write-through deliveries never wait; they are counted in the first bucket by whoever
    renders this (delivered minus queued).
    """

    BOUNDS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0.0
        self.observed = 0

    def observe(self, seconds: float, count: int = 1) -> None:
        index = bisect_left(self.BOUNDS, seconds)
        self.counts[index] += count
        self.total += seconds * count
        self.observed += count
