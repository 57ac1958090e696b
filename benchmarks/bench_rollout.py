"""AttentionRollout and RawAttention: cost against one forward, and peak
memory against depth and tokens (issue 17).

Time: ``vit_small_patch16_224`` shape, random init, float32, the batches of
``--batch`` (8 and 64), ``--threads`` CPU threads (2). In one run, interleaved,
``--repeats`` times each after a warm-up, the medians of
``model(x)`` under ``torch.no_grad()`` (timm's fused attention) and of each
method's ``attribute(x)`` are compared. Goal: both <= 1.15x one forward.

Memory: in a fresh process per cell (see ``_timing.peak_extra_mib``), the
extra resident memory of one call at batch 1 of: the forward; RawAttention;
AttentionRollout; and, for comparison, a traced forward that keeps every
layer's attention ``(B, heads, N, N)`` (what rollout kept before it
accumulated its product during the forward). Depth: ViT-T/S/B/L/16 at 224 px;
tokens: ViT-S/16 at 224 and 384 px, ViT-S/14 (DINOv2's shape) at 518 px
(197, 577 and 1370 tokens).

With the memory tables, the time of each workload over the forward's at
batch 1 for the same cells (in the main process, interleaved, ``--repeats``)
shows how time grows with depth and tokens; ``--plot`` draws both.

Usage: ``python benchmarks/bench_rollout.py [--batch 8 64] [--repeats 5]
[--memory] [--plot docs/_static/rollout_memory.png]`` (``--batch`` with no
value skips the batch timing)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from _timing import (
    fresh_process_env,
    interleaved,
    peak_extra_mib,
)  # benchmarks/_timing.py

DEPTH = [
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "vit_large_patch16_224",
]
#: (model, px) of the token sweep: ViT-S/16 at 224 and 384 px, ViT-S/14
#: (DINOv2's shape: 518 px is 37x37 patches of 14) at 518 px
TOKENS = [
    ("vit_small_patch16_224", 224),
    ("vit_small_patch16_224", 384),
    ("vit_small_patch14_dinov2", 518),
]
WORKLOADS = ["forward", "raw_attention", "rollout", "all_attention"]


def _model(name: str, size: int = 224):
    import timm

    torch.manual_seed(0)
    kwargs = {"img_size": size} if size != 224 else {}
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def _workload(name: str, model, x):
    import captum_vit as cv

    if name == "forward":

        def fn():
            with torch.no_grad():
                model(x)
    elif name == "raw_attention":
        method = cv.RawAttention(model)
        fn = lambda: method.attribute(x, output="tokens")  # noqa: E731
    elif name == "rollout":
        method = cv.AttentionRollout(model)
        fn = lambda: method.attribute(x, output="tokens")  # noqa: E731
    else:
        adapter = cv.adapters.get(model)

        def fn():
            with torch.no_grad(), adapter.trace(cv.adapters.Tracer()):
                adapter.forward(x)

    return fn


def memory_cell(model_name: str, size: int, workload: str) -> float:
    model = _model(model_name, size)
    x = torch.randn(1, 3, size, size)
    return peak_extra_mib(_workload(workload, model, x))


def _cell(model_name: str, size: int, workload: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--cell", model_name, str(size), workload],
        env=fresh_process_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_batch(B: int, repeats: int) -> dict:
    model = _model("vit_small_patch16_224")
    x = torch.randn(B, 3, 224, 224)
    work = ("forward", "raw_attention", "rollout")
    med = interleaved({w: _workload(w, model, x) for w in work}, repeats)
    print(f"\nViT-S/16, batch {B}: forward {med['forward'] * 1e3:.0f} ms")
    for w in ("raw_attention", "rollout"):
        r = med[w] / med["forward"]
        ok = "ok" if r <= 1.15 else "OVER GOAL"
        print(
            f"  {w:>14}: {med[w] * 1e3:8.0f} ms = {r:.3f}x forward (goal <= 1.15x, {ok})"
        )
    return med


def time_cell(model_name: str, size: int, repeats: int) -> dict:
    """Time of each workload over the forward's, batch 1, in this process."""
    model = _model(model_name, size)
    x = torch.randn(1, 3, size, size)
    med = interleaved({w: _workload(w, model, x) for w in WORKLOADS}, repeats)
    return {w: med[w] / med["forward"] for w in WORKLOADS}


def memory_tables(plot: str = "", repeats: int = 3) -> None:
    rows = []
    print("\npeak extra memory of one call, batch 1 (MiB) | time / forward")
    print(
        f"{'model':>24} {'px':>4} {'N':>5} "
        + " ".join(f"{w:>14}" for w in WORKLOADS)
        + " | "
        + " ".join(f"{w:>8.8}" for w in WORKLOADS[1:])
    )
    cells = [(m, 224) for m in DEPTH] + TOKENS[1:]
    for name, size in cells:
        vals = {w: _cell(name, size, w) for w in WORKLOADS}
        ratios = time_cell(name, size, repeats)
        N = (size // (14 if "patch14" in name else 16)) ** 2 + 1
        rows.append((name, size, N, vals, ratios))
        print(
            f"{name:>24} {size:>4} {N:>5} "
            + " ".join(f"{vals[w]:>14.1f}" for w in WORKLOADS)
            + " | "
            + " ".join(f"{ratios[w]:>8.2f}" for w in WORKLOADS[1:])
        )
    if plot:
        _plot(rows, plot)


def _plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4))
    depth = [r for r in rows if r[1] == 224]
    tokens = [r for r in rows if (r[0], r[1]) in TOKENS]
    for col, sel, key, label in (
        (0, depth, lambda r: r[0].split("_")[1], "ViT-T/S/B/L at 224 px"),
        (1, tokens, lambda r: f"{r[2]}", "ViT-S: tokens N"),
    ):
        xs = [key(r) for r in sel]
        for w, style in zip(WORKLOADS, ("k-", "b--", "g-o", "r:")):
            axes[0, col].plot(xs, [r[3][w] for r in sel], style, label=w)
            axes[1, col].plot(xs, [r[4][w] for r in sel], style, label=w)
        axes[0, col].set_ylabel("peak extra MiB (batch 1)")
        axes[0, col].set_yscale("log")
        axes[1, col].set_ylabel("time / forward (batch 1)")
        axes[1, col].set_xlabel(label)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="*", default=[8, 64])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory", action="store_true", help="also the memory tables")
    p.add_argument("--plot", default="", help="write the memory plot here")
    p.add_argument("--cell", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.cell:
        name, size, workload = args.cell
        print(json.dumps(memory_cell(name, int(size), workload)))
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for B in args.batch:
        time_batch(B, args.repeats)
    if args.memory or args.plot:
        memory_tables(args.plot, args.repeats)


if __name__ == "__main__":
    main()
