"""Benchmark: the LRP methods and the gradient-based attention methods against
one forward+backward of the same model, same batch, same run.

Model: ``timm.create_model("vit_small_patch16_224", pretrained=False)`` (random
init, ViT-S/16 shape), batch 8, float32, CPU, ``--threads`` threads (2 by
default, like CI). Baselines, measured in the same run:

* ``forward+backward``: ``model(x)`` with gradients, then
  ``logits.gather(1, target).sum().backward()`` with the parameters requiring
  gradients, as a stock model has them (parameter gradients computed; the
  baseline of issue 17's ratios);
* ``fwd+bwd frozen``: the same with every parameter's ``requires_grad`` off
  and the gradient taken with respect to the input only (parameter gradients
  off, as LXT's example runs; the baseline of issue 18's ratios);
* ``forward``: ``model(x)`` under ``torch.no_grad()``.

Every workload is timed in turn, ``--repeats`` rounds after one warm-up call
each, and the medians are compared. Peak memory is measured per workload in a
fresh subprocess (``_timing.peak_extra_mib``: the peak resident set one call
needs above what the process held before it).

``--profile NAME ...`` prints, per workload, torch.profiler's top operators
by self CPU time (with the memory they allocate), the matrix-multiply FLOPs
and the autograd Functions that ran.

Run: ``python benchmarks/bench_lrp.py [--repeats 5] [--batch 8] [--threads 2]``
or ``python benchmarks/bench_lrp.py --profile AttnLRP TransformerLRP``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from typing import Callable, Dict, Tuple

import torch
from _timing import (  # benchmarks/_timing.py
    baseline_fns,
    fresh_process_env,
    interleaved,
    peak_extra_mib,
)

#: (workload, baseline it is compared with, goal) — issue 17 / issue 18
GOALS = [
    ("AttnLRP", "forward+backward", 1.5),
    ("LRP", "forward+backward", 1.5),
    ("LRP", "fwd+bwd frozen", 1.2),
    ("PartialLRP", "fwd+bwd frozen", 1.2),
    ("TransformerLRP", "forward+backward", 2.0),
    ("GenericAttention", "forward+backward", 1.3),
    ("GradSAM", "forward+backward", 1.3),
]
MEMORY_GOALS = [("TransformerLRP", "forward+backward", 1.3)]


def build(batch: int) -> Tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    x = torch.randn(batch, 3, 224, 224)
    target = torch.arange(batch) % model.num_classes
    return model, x, target


def workloads(model, x, target) -> Dict[str, Callable[[], object]]:
    import captum_vit as cv

    rows = torch.arange(x.shape[0])
    base = baseline_fns(model, x, target)

    def frozen():
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            xx = x.detach().requires_grad_(True)
            torch.autograd.grad(model(xx)[rows, target].sum(), xx)
        finally:
            for p in params:
                p.requires_grad_(True)

    methods = {
        "AttnLRP": cv.AttnLRP(model),
        "LRP": cv.LRP(model),
        "LRP original": cv.LRP(model, rules="original"),
        "PartialLRP": cv.PartialLRP(model),
        "TransformerLRP": cv.TransformerLRP(model),
        "GenericAttention": cv.GenericAttention(model),
        "GradSAM": cv.GradSAM(model),
    }
    fns: Dict[str, Callable[[], object]] = {
        "forward": base["forward"],
        "forward+backward": base["forward_backward"],
        "fwd+bwd frozen": frozen,
    }
    for name, method in methods.items():
        fns[name] = lambda m=method: m.attribute(x, target=target, output="tokens")
    return fns


def profile(name: str, fn: Callable[[], object]) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    with torch_profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, with_flops=True
    ) as prof:
        fn()
    events = prof.key_averages()
    gflops = sum(e.flops for e in events) / 1e9
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    print(f"\n=== {name}: {total:.3f} s self CPU, {gflops:.1f} GFLOP (matmul/conv)")
    print(
        events.table(
            sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=36
        )
    )
    functions = Counter()
    for e in events:
        if e.key.endswith("Backward") or e.key.endswith("Backward0"):
            functions[e.key] += e.count
    print("autograd Functions:", dict(functions.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", help="workloads to time (default all)")
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    parser.add_argument("--profile", nargs="+", metavar="NAME")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, x, target = build(args.batch)
    fns = workloads(model, x, target)
    if args.memory:
        print(json.dumps({"peak_extra_mib": peak_extra_mib(fns[args.memory])}))
        return
    if args.profile:
        for name in args.profile:
            profile(name, fns[name])
        return
    if args.only:
        keep = {"forward", "forward+backward", "fwd+bwd frozen", *args.only}
        fns = {k: v for k, v in fns.items() if k in keep}
    med = interleaved(fns, args.repeats)
    mem = {}
    for name in fns:
        out = subprocess.run(
            [sys.executable, __file__, "--memory", name]
            + ["--batch", str(args.batch), "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=True,
            env=fresh_process_env(),
        )
        mem[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_mib"]
    print(
        f"vit_small_patch16_224 (random init), batch {args.batch}, torch "
        f"{torch.__version__}, {args.threads} threads, {args.repeats} interleaved "
        "repeats, medians"
    )
    fb, fz = med["forward+backward"], med["fwd+bwd frozen"]
    print(
        f"{'workload':>18}  {'s/batch':>8}  {'x fwd+bwd':>9}  {'x frozen':>8}  "
        f"{'peak MiB':>8}  {'x fwd+bwd peak':>14}"
    )
    for name in fns:
        print(
            f"{name:>18}  {med[name]:8.3f}  {med[name] / fb:9.2f}  "
            f"{med[name] / fz:8.2f}  {mem[name]:8.0f}  "
            f"{mem[name] / mem['forward+backward']:14.2f}"
        )
    print("goals:")
    for name, base, goal in GOALS:
        if name in med:
            r = med[name] / med[base]
            ok = "ok" if r <= goal else "OVER"
            print(f"  {name} / {base}: {r:.2f}x (<= {goal}x: {ok})")
    for name, base, goal in MEMORY_GOALS:
        if name in mem:
            r = mem[name] / mem[base]
            ok = "ok" if r <= goal else "OVER"
            print(f"  peak {name} / {base}: {r:.2f}x (<= {goal}x: {ok})")


if __name__ == "__main__":
    main()
