"""Interleaved timing for benchmarks that compare engines on a machine other jobs share.

Timed runs alternate (A, B, C, A, B, C …) so load from other processes lands on every side alike;
each engine's number is its median, and a comparison is the median and spread (min–max) of the
per-repeat ratios, which load that comes and goes cannot bias towards one side.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of every function, timed in turn ``repeats`` times (after one untimed warm-up each)."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def cuda_peak_tracked(run: Callable[[], None], peaks: list[float]) -> Callable[[], None]:
    """``run`` synchronised (for timing), appending to ``peaks`` the CUDA memory it allocated above
    what was resident before it."""
    import torch

    def wrapped() -> None:
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - resident)
    return wrapped


def ratio_summary(fast: list[float], slow: list[float]) -> str:
    """'median R× (min–max)' of slow/fast per repeat: how many times faster ``fast`` ran."""
    ratios = sorted(s / f for f, s in zip(fast, slow, strict=True))
    return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"
