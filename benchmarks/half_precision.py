"""Half precision: how far the maps of a bfloat16 / float16 model are from the
maps of the same model in float32, for every registered method.

For each model and method, the float32 map of ``method.attribute(x,
target=t)`` (``t``: the float32 model's predicted classes, so both explain
the same class) is compared with the map of the same method on a copy of the
model cast to bfloat16 (and float16) with the inputs cast likewise. Per
image, two numbers, and the worst image is printed:

* ``err``: the scale-relative error ``max|half - f32| / max|f32|``;
* ``corr``: the Pearson correlation of the two maps over the pixels.

The ``model`` row gives the same numbers for the logits themselves: how far
the half-precision model is from the float32 one before any method runs (a
floor for every method whose map is a difference of the model's outputs).
A method that refuses a dtype (``TypeError``: the documented tolerance does
not hold for it) is measured anyway, its refusal bypassed, and its cell is
marked ``refused``: the numbers say why it refuses.

Models: a ViT-S/16-shaped timm model (random init, 224 px, 1000 classes;
``--batch`` images of Gaussian noise) and the shipped ``synthetic_vit`` zoo
model on ``--zoo-batch`` images of the synthetic benchmark (test split). The
methods run with their defaults, except TIS (``--tis-masks`` masks).

Usage: ``python benchmarks/half_precision.py [--models vit_s,synthetic_vit]
[--dtypes bfloat16,float16] [--methods '*'] [--batch 2] [--zoo-batch 8]
[--tis-masks 256] [--threads 0] [--device cpu]``
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import platform
import time
import warnings
from typing import Dict, List, Optional, Tuple

import timm
import torch
from torch import Tensor

import captum_vit as cv
import captum_vit.data
import captum_vit.zoo

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def compare(half: Tensor, ref: Tensor) -> Tuple[float, float]:
    """``(err, corr)`` of the worst image: the largest scale-relative error
    and the smallest Pearson correlation over the batch (in float64; two
    constant maps correlate 1, a constant map and a varying one 0)."""
    a = half.detach().double().flatten(1)
    b = ref.detach().double().flatten(1)
    err = torch.where(
        (a - b).abs().amax(1) == 0,
        torch.zeros(len(a), dtype=a.dtype),
        (a - b).abs().amax(1) / b.abs().amax(1),
    )
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    corr = (a * b).sum(1) / (na * nb).clamp_min(1e-300)
    corr = torch.where((na == 0) & (nb == 0), torch.ones_like(corr), corr)
    return float(err.max()), float(corr.min())


def load_models(names: List[str], batch: int, zoo_batch: int, device: str) -> Dict:
    """``{name: (model, images)}`` in float32."""
    out = {}
    for name in names:
        if name == "vit_s":
            torch.manual_seed(0)
            model = timm.create_model(
                "vit_small_patch16_224", pretrained=False, num_classes=1000
            )
            g = torch.Generator().manual_seed(1)
            x = torch.randn(batch, 3, 224, 224, generator=g)
        elif name == "synthetic_vit":
            zm = captum_vit.zoo.load("synthetic_vit")
            model = zm.model
            ds = captum_vit.data.SyntheticObjects(
                zoo_batch, seed=0, split="test", image_size=64, transform=zm.transform
            )
            x = torch.stack([ds[i].image for i in range(zoo_batch)])
        else:
            raise ValueError(f"unknown model {name!r}: vit_s or synthetic_vit")
        out[name] = (model.eval().to(device), x.to(device))
    return out


def options(name: str, tis_masks: int) -> dict:
    return {"n_masks": tis_masks} if name == "tis" else {}


Cell = Tuple[float, float, bool]


def run(
    model: torch.nn.Module,
    x: Tensor,
    methods: List[str],
    dtypes: List[str],
    tis_masks: int,
) -> Dict[str, Dict[str, Cell]]:
    """``{method: {dtype: (err, corr, refused)}}``, plus the ``model`` row
    for the logits."""
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(-1)
    halves = {d: copy.deepcopy(model).to(DTYPES[d]) for d in dtypes}
    rows: Dict[str, Dict[str, Cell]] = {"model": {}}
    for d, m in halves.items():
        with torch.no_grad():
            rows["model"][d] = (*compare(m(x.to(DTYPES[d])), logits), False)
    for name in methods:
        rows[name] = {}
        t0 = time.perf_counter()
        ref = cv.attr.create_method(name, model, **options(name, tis_masks))
        expected = ref.attribute(x, target=target)
        for d, m in halves.items():
            method = cv.attr.create_method(name, m, **options(name, tis_masks))
            refused = DTYPES[d] not in method._half_dtypes
            # measured anyway: the instance's dtypes bypass the refusal
            method._half_dtypes = (DTYPES[d],)
            got = method.attribute(x.to(DTYPES[d]), target=target)
            rows[name][d] = (*compare(got, expected), refused)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def table(results: Dict[str, Dict], dtypes: List[str]) -> str:
    """An RST grid table: one row per method, err and corr per model and
    dtype."""
    cols = [(m, d) for m in results for d in dtypes]
    head = ["method"] + [f"{m} {d}" for m, d in cols]
    methods = list(next(iter(results.values())))
    body = []
    for name in methods:
        row = [name]
        for m, d in cols:
            err, corr, refused = results[m][name][d]
            row.append(f"{err:.1e} / {corr:.4f}" + (" refused" if refused else ""))
        body.append(row)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]

    def line(ch: str) -> str:
        return "+" + "+".join(ch * (w + 2) for w in widths) + "+"

    def fmt(r: List[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    out = [line("-"), fmt(head), line("=")]
    for r in body:
        out += [fmt(r), line("-")]
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="vit_s,synthetic_vit")
    p.add_argument("--dtypes", default="bfloat16,float16")
    p.add_argument("--methods", default="*", help="fnmatch pattern(s), comma-separated")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--zoo-batch", type=int, default=8)
    p.add_argument("--tis-masks", type=int, default=256)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    dtypes = a.dtypes.split(",")
    patterns = a.methods.split(",")
    methods = [
        n
        for n in cv.attr.list_methods()
        if any(fnmatch.fnmatch(n, pat) for pat in patterns)
    ]
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{a.device} ({torch.get_num_threads()} threads); cells: worst image's "
        "max|half - f32| / max|f32| / Pearson correlation"
    )
    results = {}
    for name, (model, x) in load_models(
        a.models.split(","), a.batch, a.zoo_batch, a.device
    ).items():
        print(f"{name}: {x.shape[0]} images {tuple(x.shape[1:])}", flush=True)
        results[name] = run(model, x, methods, dtypes, a.tis_masks)
    print(table(results, dtypes))
    return results


if __name__ == "__main__":
    main()
