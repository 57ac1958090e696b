"""Cost of the attention methods as ratios to one forward / forward+backward.

Measured in one run on the same model and batch (ViT-S/16 shape, random init):

* baseline ``forward``: ``model(x)`` under ``torch.no_grad()`` with timm's
  default fused attention;
* baseline ``forward+backward``: ``model(x)`` with gradients, then
  ``logits[range(B), target].sum().backward()`` (parameters require grad, as
  in a stock model);
* each method's ``attribute(x, target=target)``.

Goals (issue 2): RawAttention, AttentionRollout <= 1.3x forward; (issue 17)
GradSAM, GenericAttention <= 1.3x forward+backward.

Usage: ``python benchmarks/bench_attention.py [--batch 1 8] [--repeats 5]``
"""

from __future__ import annotations

import argparse

import timm
import torch
from _timing import baselines, timeit  # benchmarks/_timing.py

import captum_vit as cv


def bench_batch(model, B: int, dev: str, repeats: int) -> None:
    """Time the baselines and every method on one batch size."""
    x = torch.randn(B, 3, 224, 224, device=dev)
    target = torch.arange(B, device=dev) % model.num_classes

    t_f, t_fb = baselines(model, x, target, repeats, dev)
    print(
        f"\nbatch {B}: forward {t_f * 1e3:.1f} ms, forward+backward {t_fb * 1e3:.1f} ms"
    )
    rows = [
        ("RawAttention", cv.RawAttention(model), t_f, "forward", 1.3),
        ("AttentionRollout", cv.AttentionRollout(model), t_f, "forward", 1.3),
        ("GradSAM", cv.GradSAM(model), t_fb, "forward+backward", 1.3),
        (
            "GenericAttention",
            cv.GenericAttention(model),
            t_fb,
            "forward+backward",
            1.3,
        ),
    ]
    for name, method, base, base_name, goal in rows:
        t = timeit(lambda m=method: m.attribute(x, target=target), repeats, dev)
        ratio = t / base
        ok = "ok" if ratio <= goal else "OVER GOAL"
        print(
            f"  {name:>18s}: {t * 1e3:8.1f} ms = {ratio:.2f}x {base_name}"
            f" (goal <= {goal}x, {ok})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    dev = args.device
    model = timm.create_model(args.model, pretrained=False).eval().to(dev)
    print(
        f"model {args.model}, torch {torch.__version__}, device {dev}, "
        f"threads {torch.get_num_threads()}"
    )
    for B in args.batch:
        bench_batch(model, B, dev, args.repeats)


if __name__ == "__main__":
    main()
