"""Timing helper shared by the micro-benchmarks (``bench_ops.py``, ``bench_eval.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(step: Callable[[], object], repeats: int, warmups: int = 1) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``step`` after ``warmups`` untimed ones."""
    for _ in range(warmups):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
