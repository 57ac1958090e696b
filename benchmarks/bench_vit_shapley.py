"""Cost of ViTShapley inference as a ratio to one classifier forward.

Measured in one run on the same model and batch (ViT-S/16 shape, random init;
training does not change the cost, so untrained parts are timed):

* baseline ``forward``: ``model(x)`` under ``torch.no_grad()`` with timm's
  default fused attention;
* ``explainer``: one forward of the explainer (backbone + per-token head);
* ``surrogate v(1), v(0)``: the surrogate on the batch plus one image (the
  grand and null values of the efficient normalisation), attention masked;
* ``attribute``: the whole call (explainer + surrogate + output formatting).

Goal (issue 8): inference is one explainer forward, i.e. ``attribute`` costs a
small constant number of forwards (about 2: explainer + surrogate), independent
of the number of patches (a sampling estimator needs hundreds).

Usage: ``python benchmarks/bench_vit_shapley.py [--batch 1 8] [--repeats 5]``
"""

from __future__ import annotations

import argparse

import timm
import torch
from _timing import timeit  # benchmarks/_timing.py

import captum_vit as cv
from captum_vit.attr.vit_shapley._game import grand_and_null, link_function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    dev = args.device
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False).to(dev).eval()
    method = cv.ViTShapley(
        cv.ShapleyExplainer(timm.create_model(args.model)).to(dev).eval(),
        cv.ShapleySurrogate(timm.create_model(args.model)).to(dev).eval(),
    )
    size = model.patch_embed.img_size
    print(f"{args.model} on {dev}, {torch.get_num_threads()} threads")
    for B in args.batch:
        bench_batch(model, method, torch.randn(B, 3, *size, device=dev), args)


def bench_batch(
    model: torch.nn.Module,
    method: cv.ViTShapley,
    x: torch.Tensor,
    args: argparse.Namespace,
) -> None:
    """Time the baseline, the two parts and ``attribute`` on one batch."""
    dev = args.device

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def explainer() -> None:
        with torch.no_grad():
            method.explainer(x)

    def surrogate() -> None:
        with torch.no_grad():
            grand_and_null(method.surrogate, x, link_function("softmax"))

    t_f = timeit(forward, args.repeats, dev)
    t_e = timeit(explainer, args.repeats, dev)
    t_s = timeit(surrogate, args.repeats, dev)
    t_a = timeit(lambda: method.attribute(x), args.repeats, dev)
    print(f"\nbatch {x.shape[0]}: forward {t_f * 1e3:.1f} ms")
    for name, t in (
        ("explainer forward", t_e),
        ("surrogate v(1), v(0)", t_s),
        ("attribute", t_a),
    ):
        print(f"  {name:<22} {t * 1e3:8.1f} ms  {t / t_f:5.2f}x forward")


if __name__ == "__main__":
    main()
