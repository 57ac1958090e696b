"""The ``captum-vit`` command line.

``captum-vit explain`` explains images (default: the embedded model on bundled
synthetic samples) with several methods and writes a PNG grid of overlays
(image, then one column per method) and a JSON of the scores.
``captum-vit benchmark`` runs methods x metrics over a dataset, single process
or under ``torchrun``, and writes the table (Markdown, CSV) and bar charts.
``captum-vit insights`` serves the web visualiser.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch


def _split(values: Optional[Sequence[str]]) -> Optional[List[str]]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; None stays None."""
    if not values:
        return None
    return [v for item in values for v in item.split(",") if v]


def _load_images(paths: Sequence[str], size: int) -> torch.Tensor:
    """Image files as a ``(B, 3, size, size)`` float batch in ``[0, 1]``."""
    import numpy as np
    from PIL import Image

    out = []
    for p in paths:
        img = Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
    return torch.stack(out)


def _load_model(args: argparse.Namespace):
    from .benchmark import load_model

    return load_model(args.model, args.model_name, args.img_size, args.num_classes)


def explain(args: argparse.Namespace) -> int:
    """Explain images (default: bundled synthetic samples) with several methods;
    write a PNG grid of overlays and a JSON of the scores."""
    from .benchmark._explain import default_methods, explain_images, mean_scores
    from .data import SyntheticObjects
    from .viz import method_grid

    lm = _load_model(args)
    masks, labels = None, None
    if args.images:
        raw = _load_images(args.images, lm.image_size)
        sources = [str(p) for p in args.images]
    else:
        ds = SyntheticObjects(args.samples, seed=args.seed, image_size=lm.image_size)
        raw, labels, masks, _ = ds.tensors()
        sources = [
            f"synthetic test sample {i} (seed {args.seed})" for i in range(len(ds))
        ]
    images = lm.transform(raw)
    methods = _split([args.methods] if args.methods else None) or default_methods(
        lm.model
    )
    res = explain_images(lm, images, methods, args.target, masks)
    probs = res["logits"].softmax(-1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = lambda c: lm.classes[c] if c < len(lm.classes) else str(c)  # noqa: E731
    titles = [
        f"{name(int(t))} ({probs[i, t]:.2f})" for i, t in enumerate(res["targets"])
    ]
    png = out / "explanations.png"
    method_grid(images, res["maps"], str(png), titles=titles, mean=lm.mean, std=lm.std)
    per_image = []
    for i, src in enumerate(sources):
        pred, tgt = int(res["predictions"][i]), int(res["targets"][i])
        entry = {
            "source": src,
            "prediction": pred,
            "prediction_name": name(pred),
            "probability": float(probs[i, pred]),
            "target": tgt,
            "target_name": name(tgt),
            "scores": res["scores"][i],
        }
        if labels is not None:
            entry["label"] = int(labels[i])
            entry["label_name"] = SyntheticObjects.classes[int(labels[i])]
        per_image.append(entry)
    summary = {
        "model": lm.source,
        "methods": methods,
        "image": str(png),
        "scores_help": {
            "deletion_auc": "lower is better",
            "insertion_auc": "higher is better",
            "pointing_game": "1 = the map's maximum lies on the object mask",
        },
        "mean_scores": mean_scores(res["scores"]),
        "images": per_image,
    }
    js = out / "explanations.json"
    js.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"model: {lm.source}")
    print(f"wrote {png} ({len(methods)} methods x {images.shape[0]} images)")
    print(f"wrote {js}")
    return 0


def benchmark(args: argparse.Namespace) -> int:
    """Run methods x metrics over a dataset; print and save the table."""
    from .benchmark import make_dataset, run_benchmark

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.set_num_threads(1)  # torchrun: one thread per rank
    kind, *rest = args.dataset
    if len(rest) > 1:
        raise SystemExit("--dataset takes a kind and at most one PATH")
    if kind != "synthetic" and args.model is None:
        raise SystemExit(
            f"--dataset {kind} needs --model (a timm name such as "
            "vit_base_patch16_224, or a checkpoint file)"
        )
    lm = _load_model(args)
    ds = make_dataset(
        kind,
        rest[0] if rest else None,
        lm.image_size,
        lm.transform,
        args.limit,
        args.seed,
    )
    res = run_benchmark(
        lm.model,
        ds,
        _split(args.methods),
        _split(args.metrics),
        lm.mean,
        lm.std,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        show_progress=not args.no_progress,
        model_name=lm.source,
    )
    if res is None:  # a rank other than 0
        return 0
    print(f"{res.dataset}, {res.n} samples; {res.model}")
    print("mean over samples; arrows: which direction is better; bold: best")
    print()
    print(res.to_markdown(), end="")
    files = res.save(args.out, plots=not args.no_plots)
    print()
    for kind_, path in files.items():
        print(f"wrote {path}" + ("/" if kind_ == "plots" else ""))
    return 0


def insights(args: argparse.Namespace) -> int:
    """Serve the web visualiser on the embedded default model and benchmark."""
    from .insights import default_visualizer

    vis = default_visualizer(samples=args.samples, seed=args.seed)
    vis.serve(host=args.host, port=args.port, blocking=True)
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="embedded model name, checkpoint file (.pth/.pt/.bin/.safetensors) "
        "or timm name (pretrained, downloads); default: the embedded model",
    )
    p.add_argument(
        "--model-name", default=None, help="timm architecture of a checkpoint"
    )
    p.add_argument("--img-size", type=int, default=None, help="timm img_size")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the head")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-vit", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "explain",
        help="explain images with several methods (PNG grid + JSON of scores)",
    )
    p.add_argument(
        "images", nargs="*", help="image files (default: bundled synthetic samples)"
    )
    _model_args(p)
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated method names (default: the attention and LRP ones)",
    )
    p.add_argument("--target", type=int, default=None, help="class to explain")
    p.add_argument("--samples", type=int, default=4, help="bundled samples shown")
    p.add_argument("--out", default="out", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the bundled samples")
    p.set_defaults(func=explain)
    p = sub.add_parser("benchmark", help="method x metric table over a dataset")
    p.add_argument(
        "--dataset",
        nargs="+",
        default=["synthetic"],
        metavar="KIND [PATH]",
        help="synthetic | imagenet-seg PATH | imagenet PATH | cifar10 PATH",
    )
    _model_args(p)
    p.add_argument("--methods", nargs="+", default=None, help="default: all")
    p.add_argument(
        "--metrics", nargs="+", default=None, help="default: all the dataset allows"
    )
    p.add_argument("--limit", type=int, default=None, help="first N samples")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="dataset and metric seed")
    p.add_argument("--out", default="out/benchmark", help="output folder")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1 ... (default: cpu; cuda:LOCAL_RANK under torchrun "
        "with CUDA)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the bar charts")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=benchmark)
    p = sub.add_parser("insights", help="web visualiser (embedded model, benchmark)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8050, help="port (0: any free one)")
    p.add_argument("--samples", type=int, default=32, help="benchmark images shown")
    p.add_argument("--seed", type=int, default=1, help="seed of the benchmark")
    p.set_defaults(func=insights)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
