"""The ``captum-vit`` command line.

``captum-vit explain`` explains images with several methods and writes a PNG
grid of overlays (image, then one column per method) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

DEFAULT_METHODS = ("raw_attention", "rollout", "grad_sam", "generic_attention")


def _demo_model_and_images(seed: int = 0):
    """A small random-init timm ViT and generated images (no download)."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=4, num_classes=10
    ).eval()
    with torch.no_grad():  # sharpen attention so that the maps show structure
        for blk in model.blocks:
            blk.attn.qkv.weight.mul_(6.0)
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    images = 0.3 * torch.randn(2, 3, 64, 64, generator=g)
    for i, (cy, cx) in enumerate([(20, 40), (44, 18)]):
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < 90).float()
        images[i] += 2.0 * blob
    classes = [f"class {i}" for i in range(10)]
    return model, images, classes


def _load_images(paths: Sequence[str], size: int) -> torch.Tensor:
    from PIL import Image

    out = []
    for p in paths:
        img = Image.open(p).convert("RGB").resize((size, size))
        t = torch.tensor(list(img.getdata()), dtype=torch.float32).view(size, size, 3)
        out.append(t.permute(2, 0, 1) / 255.0)
    return torch.stack(out)


def explain(args: argparse.Namespace) -> int:
    from . import attr as cv_attr
    from .viz import method_grid

    if args.model is None:
        model, images, classes = _demo_model_and_images(args.seed)
        mean = std = None
        source = "random-init timm ViT (64px, patch 8) on generated images"
    else:
        import timm

        path = Path(args.model)
        if path.exists():
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            if isinstance(ckpt, torch.nn.Module):
                model = ckpt
            else:
                model = timm.create_model(ckpt["model_name"], pretrained=False, **ckpt.get("kwargs", {}))
                model.load_state_dict(ckpt["state_dict"])
        else:
            model = timm.create_model(args.model, pretrained=True)
        model.eval()
        cfg = model.pretrained_cfg if hasattr(model, "pretrained_cfg") else {}
        size = cfg.get("input_size", (3, 224, 224))[-1]
        mean, std = cfg.get("mean"), cfg.get("std")
        if not args.images:
            raise SystemExit("give image files to explain with --model")
        images = _load_images(args.images, size)
        if mean is not None:
            images = (images - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[
                :, None, None
            ]
        classes = [str(i) for i in range(model.num_classes)]
        source = str(args.model)

    methods = args.methods.split(",") if args.methods else list(DEFAULT_METHODS)
    with torch.no_grad():
        logits = model(images)
    pred = logits.argmax(-1)
    target = pred if args.target is None else torch.full_like(pred, args.target)
    maps = {}
    for name in methods:
        maps[name] = cv_attr.create_method(name, model).attribute(images, target=target)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    titles = [f"{classes[int(t)]} ({logits.softmax(-1)[i, t]:.2f})" for i, t in enumerate(target)]
    png = out / "explanations.png"
    method_grid(images, maps, str(png), titles=titles, mean=mean, std=std)
    summary = {
        "model": source,
        "methods": methods,
        "targets": [int(t) for t in target],
        "predictions": [int(p) for p in pred],
        "image": str(png),
    }
    (out / "explanations.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {png} ({len(methods)} methods x {images.shape[0]} images)")
    print(f"wrote {out / 'explanations.json'}")
    return 0


def insights(args: argparse.Namespace) -> int:
    """Serve the web visualiser on the embedded default model and benchmark."""
    from .insights import default_visualizer

    vis = default_visualizer(samples=args.samples, seed=args.seed)
    vis.serve(host=args.host, port=args.port, blocking=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captum-vit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("explain", help="explain images with several methods")
    p.add_argument("images", nargs="*", help="image files (default: generated samples)")
    p.add_argument("--model", default=None, help="timm model name or checkpoint file")
    p.add_argument("--methods", default=None, help="comma-separated method names")
    p.add_argument("--target", type=int, default=None, help="class to explain")
    p.add_argument("--out", default="out", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=explain)
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
