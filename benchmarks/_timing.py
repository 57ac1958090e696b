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


def baselines(model, x, target, repeats: int, device: str = "cpu"):
    """Median times of the two usual baselines on one batch, in one run:
    ``model(x)`` under ``torch.no_grad()``, and ``model(x)`` followed by
    ``logits[range(B), target].sum().backward()`` (parameter gradients
    included, as a stock model has them). Leaves no ``.grad`` behind.

    Returns:
        ``(t_forward, t_forward_backward)`` in seconds.
    """
    rows = torch.arange(x.shape[0], device=x.device)

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x)[rows, target].sum().backward()

    t_f = timeit(forward, repeats, device)
    t_fb = timeit(forward_backward, repeats, device)
    model.zero_grad(set_to_none=True)
    return t_f, t_fb
