"""Cost of explaining a CLIP image-text similarity, as ratios to one
forward+backward of the image tower through the similarity.

One run, one model, one batch (issue 14): open_clip's ``ViT-B-16`` built
with random weights (``open_clip.create_model("ViT-B-16")``: a ViT-B/16
image tower at 224 px, 197 tokens), batch 8, three prompts.

* prompt encoding: ``cv.text_similarity(model, prompts)`` (tokenizing and
  embedding the prompts; done once, when the similarity model is made),
  reported apart;
* baseline: ``sim(x)[range(B), target].sum().backward()`` (the image tower's
  forward and backward through the similarity, parameters require grad as
  in a stock model);
* each method's ``attribute(x, target=target)``.

The baseline and the methods are timed interleaved, ``--repeats`` rounds
(after one warm-up round), and the medians compared.

Goal: LeGrad and GenericAttention <= 1.5x the baseline.

Usage: ``python benchmarks/bench_clip.py [--batch 8] [--repeats 5] [--device cpu]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch

import captum_vit as cv

PROMPTS = ["a photo of a dog", "a photo of a cat", "a red car on a street"]


def _clock(fn: Callable[[], object], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="ViT-B-16", help="open_clip model name")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    import open_clip

    torch.manual_seed(0)
    dev = args.device
    model = open_clip.create_model(args.model, pretrained=None).eval().to(dev)
    t0 = time.perf_counter()
    sim = cv.text_similarity(model, PROMPTS)
    t_text = time.perf_counter() - t0
    size = model.visual.image_size[0]
    x = torch.randn(args.batch, 3, size, size, device=dev)
    target = torch.arange(args.batch, device=dev) % len(PROMPTS)
    rows = torch.arange(args.batch, device=dev)

    def baseline() -> None:
        model.zero_grad(set_to_none=True)
        sim(x)[rows, target].sum().backward()

    methods = {
        "LeGrad": cv.LeGrad(sim),
        "LeGrad (every layer)": cv.LeGrad(sim, start_layer=0),
        "GenericAttention": cv.GenericAttention(sim),
        "GenericAttention (start_layer=-1)": cv.GenericAttention(sim, start_layer=-1),
        "GradECLIP": cv.GradECLIP(sim),
        "GradSAM": cv.GradSAM(sim),
    }
    jobs: Dict[str, Callable[[], object]] = {"baseline": baseline}
    for name, m in methods.items():
        jobs[name] = lambda m=m: m.attribute(x, target=target)
    times: Dict[str, List[float]] = {name: [] for name in jobs}
    for r in range(args.repeats + 1):  # round 0: warm-up
        for name, fn in jobs.items():
            t = _clock(fn, dev)
            if r:
                times[name].append(t)
    model.zero_grad(set_to_none=True)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(
        f"open_clip {args.model} (random init), image {size} px, batch {args.batch}, "
        f"{len(PROMPTS)} prompts, torch {torch.__version__}, device {dev}, "
        f"threads {torch.get_num_threads()}, {args.repeats} interleaved rounds"
    )
    print(f"prompt encoding (once, text_similarity): {t_text * 1e3:.1f} ms")
    base = med["baseline"]
    print(f"baseline forward+backward through the similarity: {base * 1e3:.1f} ms")
    goals = {"LeGrad": 1.5, "GenericAttention": 1.5}
    for name in methods:
        ratio = med[name] / base
        goal = goals.get(name)
        note = "" if goal is None else (" ok" if ratio <= goal else " OVER GOAL")
        note = note if goal is None else f" (goal <= {goal}x,{note})"
        print(f"  {name:>34s}: {med[name] * 1e3:8.1f} ms = {ratio:.2f}x{note}")


if __name__ == "__main__":
    main()
