"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int) -> float:
    """Seconds per call of `fn`: one warm-up call (caches, kernel builds), then the median of `repeats`."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
