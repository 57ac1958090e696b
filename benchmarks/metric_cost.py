"""Cost of every registered metric as a ratio to one forward pass.

On the embedded model (``synthetic_vit``, 64 x 64 inputs) and a batch of
``--batch`` synthetic images, with one fixed attribution (rollout's, computed
once), each metric of the registry (:func:`captum_vit.metrics.list_metrics`) at
its registered settings and at the leaderboard's (``benchmarks/leaderboard.py``)
is timed against the baseline measured in the same run: one forward pass of the
batch under ``torch.no_grad()``. Timings are interleaved (baseline, metric,
baseline, metric, ...) and the medians are compared, one torch thread; the
ratio is "forward passes' worth" of time. The metrics that re-run the method
(``sensitivity_max``, ``grid_pointing_game``, ``model_randomisation``) are
reported in units of the method's own ``attribute`` call too.

    python benchmarks/metric_cost.py --batch 16 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch


def _interleaved(
    base: Callable[[], object], fn: Callable[[], object], repeats: int
) -> List[float]:
    """Median base time, median fn time (one warm-up each)."""
    base()
    fn()
    tb, tf = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        base()
        tb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fn()
        tf.append(time.perf_counter() - t0)
    return [statistics.median(tb), statistics.median(tf)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--method", default="rollout")
    p.add_argument("--metrics", nargs="+", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, "benchmarks")
    import leaderboard as lb

    from captum_vit.attr import create_method
    from captum_vit.benchmark import load_model, make_dataset
    from captum_vit.metrics import MetricContext, get_metric, list_metrics

    lm = load_model()
    ds = make_dataset("synthetic", None, lm.image_size, lm.transform, args.batch)
    b = ds.load(list(range(args.batch)), grid=True)
    x, y = b["images"], b["labels"]
    method = create_method(args.method, lm.model)
    attr = method.attribute(x, target=y).detach()
    ctx = MetricContext(
        forward_func=lm.model,
        inputs=x,
        attributions=attr,
        target=y,
        attribute_func=method.attribute,
        masks=b["masks"],
        boxes=b["boxes"],
        mean=lm.mean,
        std=lm.std,
        patch_size=8,
        seed=0,
        grid=b["grid"],
        model=lm.model,
        method_factory=lambda m: create_method(args.method, m).attribute,
    )

    def forward() -> None:
        with torch.no_grad():
            lm.model(x)

    t_fwd, t_attr = _interleaved(forward, lambda: method.attribute(x, target=y), 3)
    print(
        f"batch {args.batch}, one torch thread; one forward: {1e3 * t_fwd:.1f} ms; "
        f"{args.method}.attribute: {t_attr / t_fwd:.1f} forwards"
    )
    print(f"{'metric':28s} {'registered':>12s} {'leaderboard':>12s}")
    rows: Dict[str, List[float]] = {}
    for name in args.metrics or list_metrics():
        spec = get_metric(name)
        ratios = []
        for opts in ({}, lb.LEADERBOARD_OPTIONS.get(name)):
            if opts is None:
                ratios.append(float("nan"))
                continue
            tb, tm = _interleaved(
                forward, lambda o=opts, sp=spec: sp.compute(ctx, **o), args.repeats
            )
            ratios.append(tm / tb)
        rows[name] = ratios
        extra = ""
        if "attribute" in spec.needs or "method" in spec.needs:
            extra = f"  (= {ratios[0] * t_fwd / t_attr:.1f} x {args.method}.attribute)"
        lead = "" if ratios[1] != ratios[1] else f"{ratios[1]:12.1f}"
        print(f"{name:28s} {ratios[0]:12.1f} {lead:>12s}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
