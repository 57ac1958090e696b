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

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..data.synthetic import CLASS_NAMES, SyntheticObjects
from . import Normalize
from ._build import SWIN, VIT, build_model, last_layer_cls_attention
from ._training import (
    eval_seed,
    held_out_record,
    parse_arguments,
    save,
    train_cycles,
    train_from_args,
    training_record,
)

if TYPE_CHECKING:  # pragma: no cover
    from ._build import ZooClassifier

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
    model: ZooClassifier,
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
    from timm.models.vision_transformer import VisionTransformer

    model.eval()
    # no class token (Swin): accuracy only
    vit = model if isinstance(model, VisionTransformer) else None
    images, labels, masks, _ = SyntheticObjects(n, seed=seed, split=split).tensors()
    correct, on_obj, area, on_patch, patch_frac = 0, 0.0, 0.0, 0.0, 0.0
    for start in range(0, n, batch_size):
        x = _normalise(images[start : start + batch_size])
        y = labels[start : start + batch_size]
        m = masks[start : start + batch_size].float()[:, None]
        correct += (model(x).argmax(-1) == y).sum().item()
        if vit is None:
            continue
        attn = last_layer_cls_attention(vit, x)
        attn = attn / attn.sum(-1, keepdim=True)
        cover = F.avg_pool2d(m, vit.patch_embed.patch_size[0]).flatten(1)
        touch = (cover > 0).float()
        on_obj += (attn * cover).sum().item()
        area += cover.mean(-1).sum().item()
        on_patch += (attn * touch).sum().item()
        patch_frac += touch.mean(-1).sum().item()
    if vit is None:
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
) -> ZooClassifier:
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
        timm.models.vision_transformer.VisionTransformer (or the
        ``SwinTransformer`` of ``config``): the trained model, in
        eval mode.

    Examples::

        >>> model = train(seed=0, steps=10)
        >>> model = train(seed=0, steps=[2500, 1000])  # two cycles
    """
    config = config or DEFAULT_CONFIG
    return train_cycles(
        functools.partial(build_model, config),
        lambda n: SyntheticObjects(
            n, seed=seed, split="train", image_size=config["img_size"]
        ),
        _classification_loss,
        seed,
        steps,
        batch_size,
        lr,
        weight_decay,
        warmup,
        threads=threads,
        workers=workers,
        log_every=log_every,
        init_state=init_state,
        start_cycle=start_cycle,
        validate=lambda model: _validate(model, seed + 10_000),
    )


def _classification_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """Cross-entropy of a batch (a :class:`Sample` of stacked tensors: its
    ``label`` field is a tensor, not the ``int`` of one sample)."""
    return F.cross_entropy(model(_normalise(batch.image)), batch.label)


def _validate(model: ZooClassifier, seed: int) -> str:
    acc = evaluate(model, n=256, seed=seed, split="val")
    return f"val acc {acc['accuracy']:.3f}"


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The command line: train, evaluate, write the weights and metadata
    (``--arch vit``: :data:`DEFAULT_CONFIG`, ``synthetic_vit``; ``--arch
    swin``: :data:`SWIN_CONFIG`, ``synthetic_swin``)."""
    args = parse_arguments(
        argv,
        __doc__.split("\n\n")[0],
        None,
        [2500],
        64,
        1.5e-3,
        architectures=list(ARCHITECTURES),
    )
    config = ARCHITECTURES[args.arch]
    name = args.name or f"synthetic_{args.arch}"
    model, seconds = train_from_args(functools.partial(train, config=config), args)
    metrics = evaluate(model, n=args.eval_n, seed=eval_seed(args))
    script = f"python -m captum_vit.zoo.train --arch {args.arch}"
    meta = {
        "name": name,
        "config": config,
        "classes": list(CLASS_NAMES),
        "mean": list(MEAN),
        "std": list(STD),
        "input_range": [0.0, 1.0],
        "training": training_record(args, script, seconds),
        "held_out": held_out_record(args, "SyntheticObjects", metrics),
    }
    save(model.state_dict(), meta, args.out, name)
    return meta


if __name__ == "__main__":
    main()
