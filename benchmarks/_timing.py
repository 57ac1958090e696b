"""The timer every benchmark script shares (scripts import it as ``_timing``)."""

from __future__ import annotations

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


def interleaved(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Median wall time of each function, measured in one run: one warm-up
    call each, then ``repeats`` rounds calling every function once in turn (a
    load change on a shared machine hits all of them alike)."""
    for fn in fns.values():
        fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def baseline_fns(model, x, target) -> Dict[str, Callable[[], object]]:
    """The two usual baselines as functions: ``forward`` (``model(x)`` under
    ``torch.no_grad()``) and ``forward_backward`` (``model(x)`` then
    ``logits[range(B), target].sum().backward()``, parameter gradients
    included; no ``.grad`` is left behind)."""
    rows = torch.arange(x.shape[0], device=x.device)

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x)[rows, target].sum().backward()
        model.zero_grad(set_to_none=True)

    return {"forward": forward, "forward_backward": forward_backward}


def baselines(model, x, target, repeats: int, device: str = "cpu"):
    """Median times of the two usual baselines on one batch, in one run:
    ``model(x)`` under ``torch.no_grad()``, and ``model(x)`` followed by
    ``logits[range(B), target].sum().backward()`` (parameter gradients
    included, as a stock model has them). Leaves no ``.grad`` behind.

    Returns:
        ``(t_forward, t_forward_backward)`` in seconds.
    """
    fns = baseline_fns(model, x, target)
    t_f = timeit(fns["forward"], repeats, device)
    t_fb = timeit(fns["forward_backward"], repeats, device)
    return t_f, t_fb


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def fresh_process_env() -> Dict[str, str]:
    """The environment of a memory-measuring subprocess: glibc's ``malloc``
    with a fixed mmap threshold of 64 KiB, so that every tensor of 64 KiB or
    more is mapped and unmapped on its own (by default the threshold grows to
    the largest block freed, after which freed tensors stay in the heap and a
    second call reuses them without raising the resident set)."""
    import os

    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}


def peak_extra_mib(fn: Callable[[], object]) -> float:
    """Extra resident memory one call of ``fn`` needs, in MiB (Linux).

    After one warm-up call (allocator pools, lazy initialisation) the kernel's
    peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs``), ``fn``
    runs once, and the peak resident set size (``VmHWM``) minus the resident
    set size just before the call is returned. Run it in a fresh process per
    workload (:func:`fresh_process_env`) so that one workload's pools do not
    hide another's peak.
    """
    import gc

    fn()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024
