"""mobilevit/utils/timing.py: the one timing loop of the package and the benchmarks."""

from __future__ import annotations

import time

import torch

from mobilevit.utils.timing import median, synchronizer, time_repeats


def test_warm_up_runs_are_not_timed_and_each_timed_run_is_waited_for() -> None:
    events = []
    step = lambda: (events.append("step"), time.sleep(0.01))  # noqa: E731
    times = time_repeats(step, repeats=3, warmup=2, synchronize=lambda: events.append("sync"))
    assert events == ["step", "step", "sync"] + ["step", "sync"] * 3
    assert len(times) == 3 and all(0.01 <= seconds < 1.0 for seconds in times)


def test_median_and_the_cpu_synchronizer() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert synchronizer(torch.device("cpu"))() is None
