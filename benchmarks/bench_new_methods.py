"""Cost of the methods of issue 16 as ratios, measured in one run on one model.

* gradient-free methods (``ViTReciproCAM``, ``TIS``): ``method.attribute(x)``
  time over one stock forward pass ``model(x)`` under ``torch.no_grad()``;
* gradient methods (``AttCAT``, ``AGCAM``): over one stock forward pass plus
  the backward of the target logits (parameter gradients included, as a
  stock model has them);

both baselines from :func:`_timing.baselines` on the same batch, measured
before and after the methods (the ratio uses their mean; both are printed, so
the drift of a shared machine is visible). Every time is a median over
``--repeats`` calls after a warm-up call. Random-init timm model (default
ViT-S/16 at 224 px, 1000 classes), batch 8, the methods' default options
except ``--tis-masks`` (TIS's ``n_masks``; its cost is about linear in it).

Usage: ``python benchmarks/bench_new_methods.py [--model vit_small_patch16_224]
[--batch 8] [--repeats 3] [--tis-masks 1024] [--threads 0] [--device cpu]``
"""

from __future__ import annotations

import argparse

import timm
import torch
from _timing import baselines, timeit

import captum_vit as cv


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tis-masks", type=int, default=1024)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = timm.create_model(
        a.model, pretrained=False, img_size=a.img_size, num_classes=1000
    )
    model = model.eval().to(a.device)
    x = torch.randn(a.batch, 3, a.img_size, a.img_size, device=a.device)
    target = torch.randint(0, 1000, (a.batch,), device=a.device)
    print(
        f"model {a.model} @ {a.img_size}px, batch {a.batch}, on {a.device} "
        f"({torch.get_num_threads()} threads), median of {a.repeats}"
    )
    methods = {
        "ViTReciproCAM": (cv.ViTReciproCAM(model), "forward"),
        f"TIS(n_masks={a.tis_masks})": (
            cv.TIS(model, n_masks=a.tis_masks),
            "forward",
        ),
        "AttCAT": (cv.AttCAT(model), "forward+backward"),
        "AGCAM": (cv.AGCAM(model), "forward+backward"),
    }
    before = baselines(model, x, target, a.repeats, a.device)
    times = {
        name: timeit(
            lambda m=m: m.attribute(x, target=target, output="tokens"),
            a.repeats,
            a.device,
        )
        for name, (m, _) in methods.items()
    }
    after = baselines(model, x, target, a.repeats, a.device)
    base = {
        "forward": (before[0] + after[0]) / 2,
        "forward+backward": (before[1] + after[1]) / 2,
    }
    print(
        f"forward          {before[0] * 1e3:9.1f} ms before, "
        f"{after[0] * 1e3:9.1f} ms after"
    )
    print(
        f"forward+backward {before[1] * 1e3:9.1f} ms before, "
        f"{after[1] * 1e3:9.1f} ms after"
    )
    ratios = {}
    for name, (_, kind) in methods.items():
        ratios[name] = times[name] / base[kind]
        print(
            f"{name:20s} {times[name] * 1e3:10.1f} ms = {ratios[name]:8.1f} x "
            f"{kind}"
        )
    return {"baselines": base, "times": times, "ratios": ratios}


if __name__ == "__main__":
    main()
