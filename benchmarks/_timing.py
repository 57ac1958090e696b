"""The timers every benchmark script shares (scripts import it as ``_timing``)."""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from typing import Callable, Dict, List

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


def interleaved(
    fns: Dict[str, Callable[[], object]], repeats: int, device: str = "cpu"
) -> Dict[str, List[float]]:
    """Wall times of several workloads measured in turn: one warm-up call each,
    then ``repeats`` rounds that call every workload once, so that a slow
    stretch of a shared machine hits all of them alike. Take medians.
    """

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    for fn in fns.values():
        fn()
    sync()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_mib(fn: Callable[[], object]) -> float:
    """Peak resident memory one call of ``fn`` needs above what the process
    holds before it, in MiB (Linux, glibc; CPU). After one warm-up call (lazy
    initialisation) the freed heap is handed back to the kernel
    (``malloc_trim``, else memory the warm-up left cached would hide the
    call's needs), the kernel's peak-RSS counter is reset (``echo 5 >
    /proc/self/clear_refs``), ``fn`` runs once, and the peak (``VmHWM``) minus
    the resident set just before the call is returned. Run it in a fresh
    process per workload.
    """
    fn()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024
