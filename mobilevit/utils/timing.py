"""The one timing loop of the package and the benchmarks: warm-up runs, then timed runs, each waited for."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_repeats(
    step: Callable[[], object],
    repeats: int,
    warmup: int,
    synchronize: Callable[[], None] = lambda: None,
) -> list[float]:
    """Run ``step`` ``warmup`` times untimed, then ``repeats`` times timed; return each timed run's seconds."""
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return times


def median(values: Iterable[float]) -> float:
    """Median of ``values`` (the figure every benchmark reports)."""
    return float(statistics.median(values))
