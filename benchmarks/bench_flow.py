"""AttentionFlow with worker processes against one process, on a batch and
one image at a time, in one run.

Model: ``timm.create_model("vit_small_patch16_224", pretrained=False)``
(ViT-S/16 shape, random init, 197 tokens, 12 blocks), ``--batch`` images of
Gaussian noise, ``torch.set_num_threads(--threads)``. Workloads, interleaved
(``--repeats`` rounds after one warm-up round; medians):

* ``one at a time``: ``attribute(x[i:i + 1])`` for every image ``i``, with
  ``processes=1`` (as before the worker processes) and with
  ``processes=--threads`` (each image's tokens shared by the workers);
* ``batch``: ``attribute(x)``, with ``processes=1`` (the samples solved one
  after the other, as before) and with ``processes=--threads`` (the default
  where multiprocessing forks: torch's thread count).

Each is reported per image, with the ratio of ``one at a time, 1 process``
to it: the median wall time, and, for a machine shared with other jobs
(where the wall time of two processes depends on what else runs), a CPU
estimate of the time on idle cores: this process's CPU time plus the worker
processes' CPU time divided by their number (run with
``OMP_WAIT_POLICY=PASSIVE``, so that torch's threads waiting for a busy core
do not spin). The maps of the four
are checked equal bit for bit, and so is ``last_error_bound``.

``--profile``: where one image's time goes (the traced forward and the
capacities, the graph's construction, scipy's ``maximum_flow``, the rest of
edges, certificates and refinement), and the vectorised alternative: for
one input token, the ``--batch`` samples' networks side by side as one
disjoint graph (a super-source joined to each sample's source, each sample's
sink joined to a super-sink) in one ``maximum_flow`` call, against one call
per sample.

Usage: ``python benchmarks/bench_flow.py [--batch 8] [--threads 2]
[--repeats 3] [--profile]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import timm
import torch
from scipy.sparse import block_diag, coo_array, csr_array
from scipy.sparse.csgraph import maximum_flow

import captum_vit as cv
from captum_vit.attr import attention_flow as af


def _cpu() -> Tuple[float, float]:
    """CPU seconds so far of this process and of its reaped children."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), kids.ru_utime + kids.ru_stime


def interleaved(
    fns: Dict[str, Callable[[], object]], repeats: int
) -> Dict[str, Tuple[float, float, float]]:
    """Median wall time, CPU time of this process and CPU time of the worker
    processes of each function over ``repeats`` interleaved rounds, after one
    warm-up round (printed as they come: the runs are long)."""
    times: Dict[str, List[Tuple[float, float, float]]] = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            (c0, k0), t0 = _cpu(), time.perf_counter()
            fn()
            t = time.perf_counter() - t0
            c1, k1 = _cpu()
            print(
                f"  round {r}{' (warm-up)' if r == 0 else ''}: {name}: {t:.2f} s "
                f"(CPU {c1 - c0:.2f} s, workers {k1 - k0:.2f} s; load "
                f"{os.getloadavg()[0]:.1f})",
                flush=True,
            )
            if r:
                times[name].append((t, c1 - c0, k1 - k0))
    return {
        name: tuple(statistics.median(col) for col in zip(*t))  # type: ignore
        for name, t in times.items()
    }


def bench_batch(model, x: torch.Tensor, threads: int, repeats: int) -> None:
    B = x.shape[0]
    one = cv.AttentionFlow(model, processes=1)
    par = cv.AttentionFlow(model, processes=threads)
    out: Dict[str, Tuple[torch.Tensor, float]] = {}

    def singles(method: cv.AttentionFlow, key: str) -> None:
        maps, bound = [], 0.0
        for i in range(B):
            maps.append(method.attribute(x[i : i + 1], output="tokens"))
            bound = max(bound, method.last_error_bound)
        out[key] = (torch.cat(maps), bound)

    def batch(method: cv.AttentionFlow, key: str) -> None:
        out[key] = (method.attribute(x, output="tokens"), method.last_error_bound)

    names = {
        "one at a time, 1 process": lambda: singles(one, "one"),
        f"one at a time, {threads} proc.": lambda: singles(par, "one_par"),
        "batch, 1 process": lambda: batch(one, "serial"),
        f"batch, {threads} processes": lambda: batch(par, "par"),
    }
    t = interleaved(names, repeats)
    print(f"\nbatch {B}, {threads} threads, load average {os.getloadavg()}")
    print("  per image: wall time (median); CPU estimate: this process's CPU +")
    print(f"  the workers' CPU / {threads} (what {threads} idle cores would take)")
    one_wall, one_cpu, _ = t["one at a time, 1 process"]
    for name, (wall, cpu, kids) in t.items():
        est = cpu + kids / (threads if kids else 1)
        print(
            f"  {name:26s} wall {wall / B:6.2f} s ({one_wall / wall:.2f}x), "
            f"CPU estimate {est / B:6.2f} s ({one_cpu / est:.2f}x)"
        )
    maps = {k: v[0] for k, v in out.items()}
    bounds = {k: v[1] for k, v in out.items()}
    same = all(torch.equal(m, maps["one"]) for m in maps.values())
    print(f"  maps equal bit for bit: {same}; last_error_bound: {bounds}")


def bench_profile(model, x: torch.Tensor) -> None:
    """Where one image's time goes, and the vectorised (disjoint graph)
    alternative for one token."""
    B = x.shape[0]
    problems: List[af.Problem] = []
    solve, build = af.solve_samples, af._LayeredGraph.__init__
    real_mf = af.maximum_flow
    spent = {"build": 0.0, "maximum_flow": 0.0, "solve": 0.0}

    def grab(make, B, rtol, processes=1):
        def keep(b):
            problems.append(make(b))
            return problems[-1]

        t0 = time.perf_counter()
        res = solve(keep, B, rtol, processes)
        spent["solve"] += time.perf_counter() - t0
        return res

    def timed_build(self, *a):
        t0 = time.perf_counter()
        build(self, *a)
        spent["build"] += time.perf_counter() - t0

    def timed_mf(*a, **k):
        t0 = time.perf_counter()
        res = real_mf(*a, **k)
        spent["maximum_flow"] += time.perf_counter() - t0
        return res

    method = cv.AttentionFlow(model, processes=1)
    af.solve_samples, af._LayeredGraph.__init__ = grab, timed_build  # type: ignore
    af.maximum_flow = timed_mf
    try:
        t0 = time.perf_counter()
        method.attribute(x[:1], output="tokens")
        total = time.perf_counter() - t0
        af.maximum_flow = real_mf
        one = dict(spent)
        method.attribute(x[1:], output="tokens")  # the other samples' networks
    finally:
        af.solve_samples, af._LayeredGraph.__init__ = solve, build  # type: ignore
        af.maximum_flow = real_mf
    rest = one["solve"] - one["build"] - one["maximum_flow"]
    print(f"\none image: {total:.2f} s")
    print(f"  forward, capacities       : {total - one['solve']:6.2f} s")
    print(f"  graph construction        : {one['build']:6.2f} s")
    print(f"  scipy maximum_flow        : {one['maximum_flow']:6.2f} s")
    print(f"  edges, certificates, rest : {rest:6.2f} s")

    # the vectorised alternative for input token 1 (the first patch), stage
    # 0: the B samples share the int32 range, so each gets 2^30 / B units
    v, shift = 1, int(np.ceil(np.log2(B)))
    graphs = []
    for edges, sizes, w in problems[:B]:
        g = af._LayeredGraph(edges, sizes, w)
        icap = g.icap0_fw.copy()
        c_sink = g.last[:, [v]].toarray().ravel()
        icap[g.sink_pos_fw] = np.floor(c_sink * af._INT_SCALE).astype(np.int32)
        graphs.append((g, csr_array((icap >> shift, g.fw_indices, g.fw_indptr))))
    t0 = time.perf_counter()
    sep = [maximum_flow(G, 0, g.sink).flow_value for g, G in graphs]
    t_sep = time.perf_counter() - t0
    n = np.array([g.num_nodes for g, _ in graphs])
    start = 1 + np.concatenate([[0], np.cumsum(n)[:-1]])  # sample b's source
    N = 2 + int(n.sum())
    inner = coo_array(block_diag([G for _, G in graphs], format="csr"))
    big = 2**30 >> shift
    rows = np.concatenate(
        [inner.row + 1, np.zeros(B, int), start + [g.sink for g, _ in graphs]]
    )
    cols = np.concatenate([inner.col + 1, start, np.full(B, N - 1)])
    data = np.concatenate([inner.data, np.full(2 * B, big)]).astype(np.int32)
    union = csr_array((data, (rows, cols)), shape=(N, N))
    union.sort_indices()
    t0 = time.perf_counter()
    res = maximum_flow(union, 0, N - 1)
    t_union = time.perf_counter() - t0
    print(
        f"one token, {len(graphs)} samples, stage 0: one call per sample "
        f"{t_sep * 1e3:.0f} ms in all; one call on the disjoint graph "
        f"{t_union * 1e3:.0f} ms (flow {res.flow_value} = {sum(sep)} summed)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    x = torch.randn(a.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if a.profile:
        bench_profile(model, x)
    bench_batch(model, x, a.threads, a.repeats)


if __name__ == "__main__":
    main()
