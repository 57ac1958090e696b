r"""Train the embedded default model ``synthetic_vit`` on the synthetic
benchmark.

Run::

    python -m captum_vit.zoo.train --seed 0 --out captum_vit/zoo/weights

writes ``synthetic_vit.safetensors`` and ``synthetic_vit.json`` into ``--out``;
``--arch swin --steps 2500`` trains ``synthetic_swin`` (:data:`SWIN_CONFIG`).
Every training image is drawn fresh (``SyntheticObjects(..., split="train")``,
so the model never sees an image twice) by one data-loader worker while the
main process trains with one thread; the run is reproducible from ``--seed``
on a given machine and torch build. The held-out accuracy is measured on the
``"test"`` split drawn with a different seed (``--eval-seed``), and, for a
class-token ViT, the fraction of the last block's class-token attention that
lands on the target object is recorded next to the object's area fraction.
"""

import argparse
import json
import math
import os
import time
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..data.synthetic import CLASS_NAMES, SyntheticObjects
from . import Normalize
from ._build import SWIN, VIT, build_model, last_layer_cls_attention

#: Architecture of ``synthetic_vit``.
DEFAULT_CONFIG: Dict[str, Any] = {
    "architecture": VIT,
    "img_size": 64,
    "patch_size": 8,
    "in_chans": 3,
    "num_classes": len(CLASS_NAMES),
    "embed_dim": 128,
    "depth": 4,
    "num_heads": 4,
    "mlp_ratio": 2.0,
    "qkv_bias": True,
    "class_token": True,
    "global_pool": "token",
}
#: Architecture of ``synthetic_swin``: a timm ``SwinTransformer`` with 8x8
#: patches (an 8x8 grid, as ``synthetic_vit``), 4x4 windows and two stages:
#: 8x8 tokens in four windows (the second block shifted by 2), then 4x4
#: tokens after the patch merging (one window, so unshifted).
SWIN_CONFIG: Dict[str, Any] = {
    "architecture": SWIN,
    "img_size": 64,
    "patch_size": 8,
    "in_chans": 3,
    "num_classes": len(CLASS_NAMES),
    "embed_dim": 64,
    "depths": [2, 4],
    "num_heads": [2, 4],
    "window_size": 4,
    "mlp_ratio": 2.0,
    "qkv_bias": True,
    "global_pool": "avg",
    "drop_path_rate": 0.0,
}
#: the configs ``--arch`` chooses from
ARCHITECTURES: Dict[str, Dict[str, Any]] = {"vit": DEFAULT_CONFIG, "swin": SWIN_CONFIG}
#: Per-channel normalisation applied to ``[0, 1]`` images before the model.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


_normalise = Normalize(MEAN, STD)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    n: int = 1000,
    seed: int = 1,
    batch_size: int = 250,
    split: str = "test",
) -> Dict[str, float]:
    r"""Held-out accuracy and attention-on-object of a ``synthetic_vit``-style
    model on ``SyntheticObjects(n, seed, split)``.

    Args:
        model (torch.nn.Module): a timm ViT taking normalised 64x64 images.
        n (int, optional): number of held-out samples.
            Default: 1000
        seed (int, optional): seed of the held-out set.
            Default: 1
        batch_size (int, optional): evaluation batch size.
            Default: 250
        split (str, optional): split of the held-out set.
            Default: ``"test"``

    Returns:
        dict: ``accuracy``; ``attention_on_object``: mean over images of the
        share of the last block's class-token attention (head mean, patch
        tokens only) weighted by how much of each patch the object covers;
        ``object_area``: mean fraction of the image the object covers (the
        value a uniform attention would give); ``attention_on_object_patches``
        and ``object_patch_fraction``: the same with every patch that touches
        the object counted whole.

    Examples::

        >>> zm = captum_vit.zoo.load()
        >>> evaluate(zm.model, n=200)["accuracy"] >= 0.95
        True
    """
    model.eval()
    images, labels, masks, _ = SyntheticObjects(n, seed=seed, split=split).tensors()
    patch = model.patch_embed.patch_size[0]
    correct, on_obj, area, on_patch, patch_frac = 0, 0.0, 0.0, 0.0, 0.0
    for start in range(0, n, batch_size):
        x = _normalise(images[start : start + batch_size])
        y = labels[start : start + batch_size]
        m = masks[start : start + batch_size].float()[:, None]
        correct += (model(x).argmax(-1) == y).sum().item()
        if not hasattr(model, "blocks"):  # no class token (Swin): accuracy only
            continue
        attn = last_layer_cls_attention(model, x)
        attn = attn / attn.sum(-1, keepdim=True)
        cover = F.avg_pool2d(m, patch).flatten(1)
        touch = (cover > 0).float()
        on_obj += (attn * cover).sum().item()
        area += cover.mean(-1).sum().item()
        on_patch += (attn * touch).sum().item()
        patch_frac += touch.mean(-1).sum().item()
    if not hasattr(model, "blocks"):
        return {"accuracy": correct / n}
    return {
        "accuracy": correct / n,
        "attention_on_object": on_obj / n,
        "object_area": area / n,
        "attention_on_object_patches": on_patch / n,
        "object_patch_fraction": patch_frac / n,
    }


def train(
    seed: int = 0,
    steps: Union[int, Sequence[int]] = 2500,
    batch_size: int = 64,
    lr: float = 1.5e-3,
    weight_decay: float = 0.05,
    warmup: int = 150,
    threads: int = 1,
    workers: int = 1,
    log_every: int = 100,
    config: Optional[Dict[str, Any]] = None,
    init_state: Optional[Dict[str, torch.Tensor]] = None,
    start_cycle: int = 0,
) -> torch.nn.Module:
    r"""Train a ViT on fresh synthetic images.

    Training runs one or more cycles (warm restarts): each cycle builds a
    fresh AdamW optimiser, warms its learning rate up linearly, then decays it
    to zero on a cosine, and draws its own fresh images (cycle ``c`` reads the
    training images after those of the cycles before it, in an order shuffled
    with seed ``seed + 1000 * c``).

    Args:
        seed (int, optional): seed of the initialisation, of the training
            images and of their order.
            Default: 0
        steps (int or Sequence[int], optional): optimiser steps of each cycle.
            Default: 2500
        batch_size (int, optional): images per step.
            Default: 64
        lr (float, optional): peak AdamW learning rate of every cycle.
            Default: 1.5e-3
        weight_decay (float, optional): AdamW weight decay.
            Default: 0.05
        warmup (int, optional): warm-up steps of every cycle.
            Default: 150
        threads (int, optional): torch threads of the training process.
            Default: 1
        workers (int, optional): data-loader processes drawing the images.
            Default: 1
        log_every (int, optional): print the running loss every this many
            steps, and a validation accuracy every five times that (0: never).
            Default: 100
        config (dict, optional): model config; ``DEFAULT_CONFIG`` when None.
            Default: None
        init_state (dict, optional): resume: a state dict to start from,
            namely the weights that cycles ``0 .. start_cycle - 1`` produced.
            Default: None
        start_cycle (int, optional): resume: the first cycle to run.
            Default: 0

    Returns:
        torch.nn.Module: the trained model, in eval mode.

    Examples::

        >>> model = train(seed=0, steps=10)
        >>> model = train(seed=0, steps=[2500, 1000])  # two cycles
    """
    steps = [int(steps)] if isinstance(steps, int) else [int(v) for v in steps]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            config = config or DEFAULT_CONFIG
            model = build_model(config)
            if init_state is not None:
                model.load_state_dict(init_state, strict=True)
            data = SyntheticObjects(
                sum(steps) * batch_size,
                seed=seed,
                split="train",
                image_size=config["img_size"],
            )
            for cycle in range(start_cycle, len(steps)):
                first = sum(steps[:cycle]) * batch_size
                part = Subset(data, range(first, first + steps[cycle] * batch_size))
                _train_cycle(
                    model,
                    part,
                    seed + 1000 * cycle,
                    steps[cycle],
                    batch_size,
                    lr,
                    weight_decay,
                    warmup,
                    workers,
                    log_every,
                    val_seed=seed + 10_000,
                )
            return model.eval()
    finally:
        torch.set_num_threads(previous_threads)


def _train_cycle(
    model: torch.nn.Module,
    data: Subset,
    order_seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    workers: int,
    log_every: int,
    val_seed: int,
) -> None:
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(order_seed),
        persistent_workers=False,
    )
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos" not in n)
    ]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    running, t0 = 0.0, time.time()
    for step, batch in enumerate(loader):
        logits = model(_normalise(batch.image))
        loss = F.cross_entropy(logits, batch.label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
        if log_every and (step + 1) % log_every == 0:
            msg = f"step {step + 1}/{steps} loss {running:.4f}"
            if (step + 1) % (5 * log_every) == 0:
                acc = evaluate(model, n=256, seed=val_seed, split="val")
                msg += f" val acc {acc['accuracy']:.3f}"
                model.train()
            print(f"{msg} ({time.time() - t0:.0f} s)", flush=True)


def main(argv: Optional[list] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "weights")
    )
    parser.add_argument(
        "--arch",
        choices=sorted(ARCHITECTURES),
        default="vit",
        help="vit: DEFAULT_CONFIG (synthetic_vit); swin: SWIN_CONFIG (synthetic_swin)",
    )
    parser.add_argument("--name", default=None, help="default: synthetic_<arch>")
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[2500], help="steps of each cycle"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--eval-n", type=int, default=1000)
    parser.add_argument("--eval-seed", type=int, default=None, help="default: seed + 1")
    parser.add_argument(
        "--resume",
        default=None,
        help="safetensors weights written by the cycles before --start-cycle",
    )
    parser.add_argument("--start-cycle", type=int, default=0)
    parser.add_argument(
        "--prior-seconds",
        type=float,
        default=0.0,
        help="wall time of the resumed cycles, added to the recorded time",
    )
    args = parser.parse_args(argv)
    config = ARCHITECTURES[args.arch]
    name = args.name or f"synthetic_{args.arch}"

    from safetensors.torch import load_file, save_file

    init_state = None if args.resume is None else load_file(args.resume)

    t0 = time.time()
    model = train(
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        threads=args.threads,
        workers=args.workers,
        init_state=init_state,
        start_cycle=args.start_cycle,
        config=config,
    )
    train_seconds = time.time() - t0 + args.prior_seconds
    eval_seed = args.seed + 1 if args.eval_seed is None else args.eval_seed
    metrics = evaluate(model, n=args.eval_n, seed=eval_seed)
    meta = {
        "name": name,
        "config": config,
        "classes": list(CLASS_NAMES),
        "mean": list(MEAN),
        "std": list(STD),
        "input_range": [0.0, 1.0],
        "training": {
            "script": f"python -m captum_vit.zoo.train --arch {args.arch}",
            "seed": args.seed,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "threads": args.threads,
            "workers": args.workers,
            "seconds": round(train_seconds, 1),
            "start_cycle": args.start_cycle,
            "torch": torch.__version__,
        },
        "held_out": {
            "dataset": "SyntheticObjects",
            "split": "test",
            "seed": eval_seed,
            "n": args.eval_n,
            **{k: round(v, 4) for k, v in metrics.items()},
        },
    }
    os.makedirs(args.out, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(args.out, f"{name}.safetensors"))
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps(meta["held_out"], indent=2))
    print(f"trained in {train_seconds:.0f} s")
    return meta


if __name__ == "__main__":
    main()
