"""Cost of AttentionFlow, TAM and BeyondIntuition, and AttentionFlow vs networkx.

Measured in one run on the same model and batch (ViT-S/16 shape, random init,
197 tokens, 12 blocks):

* baseline ``forward``: ``model(x)`` under ``torch.no_grad()``;
* baseline ``forward+backward``: ``model(x)`` with gradients, then
  ``logits[range(B), target].sum().backward()``;
* each method's ``attribute(x, target=target)`` as a ratio to the baseline
  that bounds it (AttentionFlow: forward; TAM and BeyondIntuition, which run
  ``steps`` forward passes with a partial backward for the integrated
  gradient: forward+backward, reported per step too).

Flow vs networkx: the capacities of the first image's attention graph are
solved (a) by :class:`captum_vit.AttentionFlow`'s solver for all 197 input
tokens and (b) by a straightforward networkx ``maximum_flow`` on the authors'
graph (samiraabnar/attention_flow) for ``--nx-sinks`` input tokens evenly
spread over the 197 (all of them with ``--nx-sinks 197``; networkx needs
seconds per token). The networkx total for 197 tokens is extrapolated from
the mean per token when fewer are run; the script prints which.

Usage: ``python benchmarks/bench_flow_tam_bi.py [--batch 1] [--repeats 3]
[--steps 20] [--nx-sinks 8] [--nx-algorithm preflow_push] [--skip-methods]
[--skip-flow]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import networkx as nx
import numpy as np
import timm
import torch
from _timing import baselines, timeit  # benchmarks/_timing.py

import captum_vit as cv
from captum_vit.adapters import Tracer
from captum_vit.attr.attention_flow import _LayeredGraph


def bench_methods(model, B: int, repeats: int, steps: int) -> None:
    x = torch.randn(B, 3, 224, 224)
    target = torch.arange(B) % model.num_classes

    t_f, t_fb = baselines(model, x, target, repeats)
    print(
        f"\nbatch {B}: forward {t_f * 1e3:.1f} ms, forward+backward {t_fb * 1e3:.1f} ms"
    )
    rows = [
        ("AttentionFlow", cv.AttentionFlow(model), t_f, "forward", 1),
        (
            "AttentionFlow rtol=1e-12",
            cv.AttentionFlow(model, rtol=1e-12),
            t_f,
            "forward",
            1,
        ),
        ("TAM", cv.TAM(model, steps=steps), t_fb, "fwd+bwd", steps),
        (
            "BeyondIntuition token",
            cv.BeyondIntuition(model, steps=steps),
            t_fb,
            "fwd+bwd",
            steps,
        ),
        (
            "BeyondIntuition head",
            cv.BeyondIntuition(model, mode="head", steps=steps),
            t_fb,
            "fwd+bwd",
            steps,
        ),
    ]
    for name, method, base, base_name, per in rows:
        # flow takes seconds per image: one timed call after the warm-up
        reps = 1 if name.startswith("AttentionFlow") else repeats
        t = timeit(lambda m=method: m.attribute(x, target=target), reps)
        extra = f", {t / base / per:6.2f}x per IG step" if per > 1 else ""
        print(f"  {name:26s} {t * 1e3:9.1f} ms = {t / base:7.1f}x {base_name}{extra}")


def networkx_graph(mats: np.ndarray) -> nx.DiGraph:
    """The authors' layered graph: (l, i) -> (l - 1, j), capacity mats[l-1][i, j]."""
    L, N, _ = mats.shape
    G = nx.DiGraph()
    for layer in range(1, L + 1):
        for i in range(N):
            for j in range(N):
                G.add_edge(
                    (layer, i), (layer - 1, j), capacity=float(mats[layer - 1][i, j])
                )
    return G


def bench_flow_vs_networkx(model, nx_sinks: int, algorithm: str) -> None:
    x = torch.randn(1, 3, 224, 224)
    tracer = Tracer()
    adapter = cv.adapters.get(model)
    with torch.no_grad(), adapter.trace(tracer):
        model(x)
    flow = cv.AttentionFlow(model)
    mats = flow.capacities(tracer.attention_list())[0].numpy()
    L, N, _ = mats.shape
    w = np.zeros(N)
    w[0] = 1.0

    t0 = time.perf_counter()
    graph = _LayeredGraph.dense(mats, w)
    ours = np.array([graph.max_flow(v, 1e-6)[0] for v in range(N)])
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = np.array([graph.max_flow(v, 1e-12)[0] for v in range(N)])
    t_exact = time.perf_counter() - t0

    sinks = np.unique(np.linspace(0, N - 1, min(nx_sinks, N)).round().astype(int))
    t0 = time.perf_counter()
    G = networkx_graph(mats)
    t_build = time.perf_counter() - t0
    func = getattr(nx.algorithms.flow, algorithm)
    ref, per_sink = [], []
    for v in sinks:
        t0 = time.perf_counter()
        ref.append(nx.maximum_flow(G, (L, 0), (0, int(v)), flow_func=func)[0])
        per_sink.append(time.perf_counter() - t0)
    ref = np.array(ref)
    t_nx = t_build + statistics.mean(per_sink) * N
    how = "measured" if len(sinks) == N else f"extrapolated from {len(sinks)} tokens"
    err = np.abs(ours[sinks] - ref).max() / np.abs(ref).max()
    err_exact = np.abs(exact[sinks] - ref).max() / np.abs(ref).max()
    print(f"\nattention flow, ViT-S/16 graph ({L} layers, {N} tokens, one image)")
    print(f"  captum_vit rtol=1e-6 : {t_ours:8.2f} s for {N} tokens")
    print(f"  captum_vit rtol=1e-12: {t_exact:8.2f} s for {N} tokens")
    print(
        f"  networkx {algorithm}: build {t_build:.2f} s + "
        f"{statistics.mean(per_sink):.2f} s per token (min {min(per_sink):.2f}, "
        f"max {max(per_sink):.2f}) -> {t_nx:8.1f} s for {N} tokens ({how})"
    )
    print(
        f"  speed-up: {t_nx / t_ours:7.1f}x (rtol=1e-6), {t_nx / t_exact:7.1f}x (1e-12)"
    )
    print(
        f"  max relative difference to networkx: {err:.1e} (1e-6), {err_exact:.1e} (1e-12)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--nx-sinks", type=int, default=8)
    parser.add_argument("--nx-algorithm", default="preflow_push")
    parser.add_argument("--skip-methods", action="store_true")
    parser.add_argument("--skip-flow", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if not args.skip_methods:
        for B in args.batch:
            bench_methods(model, B, args.repeats, args.steps)
    if not args.skip_flow:
        bench_flow_vs_networkx(model, args.nx_sinks, args.nx_algorithm)


if __name__ == "__main__":
    main()
