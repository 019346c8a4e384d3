"""Shared by the bench scripts: the median wall time of a call."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of `fn`, after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
