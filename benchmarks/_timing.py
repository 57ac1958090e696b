"""The timer every benchmark script shares (scripts import it as ``_timing``)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def timeit(fn: Callable[[], object], repeats: int, device: str = "cpu") -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up call.

    On CUDA devices the GPU is synchronised before each clock read.
    """

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
