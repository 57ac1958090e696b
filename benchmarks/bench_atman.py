"""Cost of ATMAN as ratios, measured in one run on one model.

* ``forwards``: the ``P + 1`` stock forward passes ATMAN needs per image
  (one unsuppressed, one per patch token), run as ``model(x.expand(bs))``
  chunks of the same size under ``torch.no_grad()`` with timm's default
  fused attention — the floor for any implementation;
* ``atman[bs]``: ``ATMAN(model, internal_batch_size=bs).attribute(x)``;
* ``naive loop``: what one writes without batching: for every token, enter
  the adapter's trace with a score hook suppressing that token and run the
  model on the single image (``P + 1`` forwards at batch 1).

Goals (issue 6): ATMAN at its best ``internal_batch_size`` <= 1.2x
``forwards`` at that size, and >= 3x faster than the naive loop.

Usage: ``python benchmarks/bench_atman.py [--model vit_small_patch16_224]
[--batch-sizes 8 32 64] [--threads 2]``
"""

from __future__ import annotations

import argparse
import functools
import time

import timm
import torch

import captum_vit as cv
from captum_vit.adapters import Tracer


def seconds(fn, device: str = "cpu", warmup: bool = True) -> float:
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if warmup:
        fn()  # allocator, oneDNN / cuBLAS kernels
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="time the first call (halves the run time on a slow CPU)",
    )
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = timm.create_model(
        a.model, pretrained=False, img_size=a.img_size, num_classes=1000
    ).eval()
    model = model.to(a.device)
    x = torch.randn(1, 3, a.img_size, a.img_size, device=a.device)
    warm = not a.no_warmup
    adapter = cv.adapters.get(model)
    gh, gw = adapter.grid_size((a.img_size, a.img_size))
    R = gh * gw + 1
    print(
        f"model {a.model} @ {a.img_size}px on {a.device} "
        f"({torch.get_num_threads()} threads): {R - 1} patches, {R} forwards/image"
    )

    def forwards(bs):
        def run():
            with torch.no_grad():
                for s in range(0, R, bs):
                    model(x.expand(min(bs, R - s), -1, -1, -1))

        return run

    results = {}
    for bs in a.batch_sizes:
        f = seconds(forwards(bs), a.device, warm)
        method = cv.ATMAN(model, internal_batch_size=bs)
        m = seconds(functools.partial(method.attribute, x), a.device, warm)
        results[bs] = (f, m)
        print(f"bs={bs:4d}  forwards {f:7.2f}s  atman {m:7.2f}s  ratio {m / f:.3f}")

    npre = adapter.num_prefix_tokens
    f_factor = 0.9

    def naive():
        with torch.no_grad():
            for i in range(R):
                m = torch.ones(npre + R - 1, device=a.device)
                if i > 0:
                    m[npre + i - 1] = 1 - f_factor
                hook = lambda _l, s, m=m: s * m  # noqa: E731
                with adapter.trace(Tracer(keep_attention=False, score_hook=hook)):
                    model(x)

    t_naive = seconds(naive, a.device, warm)
    best = min(results, key=lambda bs: results[bs][1])
    f, m = results[best]
    print(f"naive loop (batch 1) {t_naive:7.2f}s")
    print(
        f"best internal_batch_size={best}: atman/forwards = {m / f:.3f} "
        f"(goal <= 1.2); naive/atman = {t_naive / m:.2f}x (goal >= 3)"
    )
    return {"results": results, "naive": t_naive, "best": best}


if __name__ == "__main__":
    main()
