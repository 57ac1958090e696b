"""Attention methods on a Swin-T-shaped model: cost against the same model's
forward / forward+backward, and memory against the number of windows
(issue 15).

Time: ``swin_tiny_patch4_window7_224`` shape, random init, float32, batch
``--batch`` (8), ``--threads`` CPU threads. In one run, interleaved,
``--repeats`` times each after a warm-up, the medians of ``model(x)`` under
``torch.no_grad()`` (forward), ``model(x)`` then
``logits[range(B), target].sum().backward()`` (forward+backward) and each
method's ``attribute(x, target=target)`` are compared. Goals: rollout <= 1.3x
forward; GenericAttention and Grad-SAM <= 1.5x forward+backward;
TransformerLRP <= 3x forward+backward.

Memory: in a fresh process per cell (``_timing.peak_extra_mib``), batch 1, the
model built with ``strict_img_size=False`` at 224, 336 and 448 px (64, 144
and 256 first-stage windows of 7x7 tokens), the extra resident memory of one
call of each method, beside the forward / forward+backward it contains. A
dense N x N attention over the first stage's tokens would grow with the
square of the window count; the graph methods keep per layer the blocks of
the windows, ``(B, nW, n, n)``, so their memory grows linearly.

Usage: ``python benchmarks/bench_swin.py [--batch 8] [--repeats 5] [--memory]
[--methods rollout,transformer_lrp]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from _timing import (
    baseline_fns,
    fresh_process_env,
    interleaved,
    peak_extra_mib,
)  # benchmarks/_timing.py

SIZES = [224, 336, 448]
METHODS = {
    "rollout": ("AttentionRollout", {}, "forward", 1.3),
    "raw_attention": ("RawAttention", {}, "forward", 1.3),
    "grad_sam": ("GradSAM", {}, "forward_backward", 1.5),
    "generic_attention": ("GenericAttention", {}, "forward_backward", 1.5),
    "transformer_lrp": ("TransformerLRP", {}, "forward_backward", 3.0),
}


def _model(size: int = 224):
    import timm

    torch.manual_seed(0)
    kwargs = {} if size == 224 else {"img_size": size, "strict_img_size": False}
    return timm.create_model("swin_tiny_patch4_window7_224", **kwargs).eval()


def _workloads(model, x, target, names):
    import captum_vit as cv

    fns = baseline_fns(model, x, target)
    for name in names:
        method = getattr(cv, METHODS[name][0])(model, **METHODS[name][1])
        fns[name] = lambda m=method: m.attribute(x, target=target, output="tokens")
    return fns


def memory_cell(size: int, workload: str) -> float:
    model = _model(size)
    x = torch.randn(1, 3, size, size)
    names = [] if workload in ("forward", "forward_backward") else [workload]
    fn = _workloads(model, x, torch.zeros(1, dtype=torch.long), names)[workload]
    return peak_extra_mib(fn)


def time_batch(B: int, repeats: int) -> None:
    model = _model()
    x = torch.randn(B, 3, 224, 224)
    target = torch.arange(B) % 1000
    med = interleaved(_workloads(model, x, target, list(METHODS)), repeats)
    print(
        f"\nSwin-T, batch {B}: forward {med['forward'] * 1e3:.0f} ms, "
        f"forward+backward {med['forward_backward'] * 1e3:.0f} ms"
    )
    for name, (_, _, base, goal) in METHODS.items():
        r = med[name] / med[base]
        ok = "ok" if r <= goal else "OVER GOAL"
        print(
            f"  {name:>18}: {med[name] * 1e3:8.0f} ms = {r:.2f}x {base} "
            f"(goal <= {goal}x, {ok})"
        )


def memory_table() -> None:
    import timm  # noqa: F401  (the window count below)

    work = ["forward", "forward_backward"] + list(METHODS)
    print("\npeak extra memory of one call, batch 1 (MiB)")
    print(f"{'px':>4} {'windows':>7} " + " ".join(f"{w:>17}" for w in work))
    for size in SIZES:
        windows = (size // 4 // 7) ** 2
        vals = {}
        for w in work:
            out = subprocess.run(
                [sys.executable, __file__, "--cell", str(size), w],
                env=fresh_process_env(),
                capture_output=True,
                text=True,
                check=True,
            )
            vals[w] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{size:>4} {windows:>7} " + " ".join(f"{vals[w]:>17.1f}" for w in work))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory", action="store_true")
    p.add_argument(
        "--methods",
        help="comma-separated subset of " + ",".join(METHODS) + " (default: all)",
    )
    p.add_argument("--cell", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.methods:
        unknown = set(args.methods.split(",")) - set(METHODS)
        if unknown:
            p.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
        for name in set(METHODS) - set(args.methods.split(",")):
            del METHODS[name]
    if args.cell:
        print(json.dumps(memory_cell(int(args.cell[0]), args.cell[1])))
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    time_batch(args.batch, args.repeats)
    if args.memory:
        memory_table()


if __name__ == "__main__":
    main()
