"""Wall-clock timing of model calls: the one implementation of benchmark, search latency and INT8 comparison."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from gpunet.device import synchronize


def time_call(fn: Callable[[], Any], device: torch.device | None = None) -> float:
    """Seconds one call of `fn` takes, GPU work included (synchronised before and after on CUDA)."""
    if device is not None:
        synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device is not None:
        synchronize(device)
    return time.perf_counter() - t0


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]; NaN for no values."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def sample_times(fn: Callable[[], Any], *, warmup: int, repeats: int, device: torch.device | None = None,
                 settle_s: float = 0.0) -> list[float]:
    """`warmup` untimed calls, then the seconds of `repeats` timed ones (each after a `settle_s` pause)."""
    for _ in range(warmup):
        fn()
    if device is not None:
        synchronize(device)
    times = []
    for _ in range(repeats):
        if settle_s:
            time.sleep(settle_s)
        times.append(time_call(fn, device))
    return times


def sample_times_until(fn: Callable[[], Any], *, warmup: int, min_repeats: int, min_seconds: float,
                       max_repeats: int = 1000, device: torch.device | None = None) -> list[float]:
    """Seconds of timed calls after `warmup` untimed ones: at least `min_repeats` calls, and more until
    `min_seconds` have passed (at most `max_repeats`), so fast calls get enough samples for a stable median."""
    sample_times(fn, warmup=warmup, repeats=0, device=device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < min_seconds and len(times) < max_repeats):
        times.append(time_call(fn, device))
    return times


def median_time(fn: Callable[[], Any], *, warmup: int, repeats: int, device: torch.device | None = None) -> float:
    """Median seconds of `fn` over `repeats` timed calls after `warmup` untimed ones."""
    return statistics.median(sample_times(fn, warmup=warmup, repeats=repeats, device=device))
