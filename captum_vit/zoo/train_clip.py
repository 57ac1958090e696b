r"""Train the embedded vision-language model ``synthetic_clip`` on the
captioned synthetic scenes.

Run::

    python -m captum_vit.zoo.train_clip --seed 0 --out captum_vit/zoo/weights

writes ``synthetic_clip.safetensors`` and ``synthetic_clip.json`` into
``--out``. The model is open_clip's own ``CLIP`` class built from a small
custom config (:data:`DEFAULT_CONFIG`: a ViT image tower with class-token
pooling, a small causal text transformer) with open_clip's ``SimpleTokenizer``,
trained from scratch with CLIP's symmetric contrastive loss on image-caption
pairs of :class:`~captum_vit.data.SyntheticScenes` (``split="train"``, every
scene drawn fresh by one data-loader worker, the training loop of
:mod:`captum_vit.zoo.train`). Two scenes of a batch that hold the same objects
are both positives of each other's caption.

The token embedding rows of tokens the captions never contain are zeroed at
initialisation (they get no gradient, so they stay zero) and the weights file
stores only the other rows. The zero-shot accuracies of :func:`zero_shot` on
held-out scenes (``split="test"``, seed ``--eval-seed``) go into the JSON.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
import torch.nn.functional as F

from ..data.scenes import COLOUR_NAMES, SceneSample, SyntheticScenes, object_prompt
from ..data.synthetic import CLASS_NAMES
from . import Normalize
from ._build import (
    build_clip,
    clip_tokenizer,
    pack_token_embedding,
    unpack_token_embedding,
)
from ._training import (
    eval_seed,
    held_out_record,
    parse_arguments,
    save,
    train_cycles,
    train_from_args,
    training_record,
)
from .train import MEAN, STD

if TYPE_CHECKING:  # pragma: no cover
    from open_clip import CLIP  # untyped: Any to the type checker

#: Architecture of ``synthetic_clip``: the arguments of ``open_clip.CLIP``.
DEFAULT_CONFIG: Dict[str, Any] = {
    "architecture": "open_clip.CLIP",
    "embed_dim": 64,
    "quick_gelu": False,
    "vision_cfg": {
        "image_size": 64,
        "patch_size": 8,
        "width": 64,
        "layers": 4,
        "head_width": 16,
        "mlp_ratio": 2.0,
        "pool_type": "tok",
    },
    "text_cfg": {
        "context_length": 20,
        "vocab_size": 49408,
        "width": 64,
        "heads": 4,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
}

_normalise = Normalize(MEAN, STD)


def all_prompts() -> List[str]:
    r"""The prompt of every (shape, colour) pair, shape-major: entry
    ``shape * len(COLOUR_NAMES) + colour`` is ``object_prompt(shape, colour)``.

    Returns:
        list[str]: ``len(CLASS_NAMES) * len(COLOUR_NAMES)`` prompts.
    """
    return [
        object_prompt(s, c)
        for s in range(len(CLASS_NAMES))
        for c in range(len(COLOUR_NAMES))
    ]


def caption_vocabulary(tokenizer: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Sorted ids of every token a :class:`SyntheticScenes` caption can hold
    (start and end of text included, padding excluded)."""
    tokens = tokenizer(all_prompts() + ["a disk and a disk"])
    return torch.unique(tokens[tokens != 0])


def build_model(config: Dict[str, Any]) -> CLIP:
    r"""A freshly initialised ``open_clip.CLIP`` of ``config`` (from the
    global torch random state) whose token embedding is zero outside
    :func:`caption_vocabulary`."""
    model = build_clip(config)
    keep = caption_vocabulary(clip_tokenizer(config))
    with torch.no_grad():
        weight = model.token_embedding.weight
        saved = weight[keep].clone()
        weight.zero_()
        weight[keep] = saved
    return model


def _same_objects(shapes: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` bool: scenes ``i`` and ``j`` hold the same objects."""
    code = torch.where(shapes >= 0, shapes * len(COLOUR_NAMES) + colours, -1)
    present = torch.zeros(
        len(shapes), len(CLASS_NAMES) * len(COLOUR_NAMES) + 1, dtype=torch.bool
    )
    present[torch.arange(len(shapes))[:, None], code] = True
    present = present[:, :-1]  # drop the padding column (code -1)
    return (present[:, None] == present[None]).all(-1)


def contrastive_loss(
    model: CLIP,
    batch: SceneSample,
    tokenizer: Callable[..., torch.Tensor],
) -> torch.Tensor:
    r"""CLIP's symmetric contrastive loss over a batch of scenes and their
    captions, with every caption of a scene that holds the same objects as a
    positive.

    .. math::

        L = \frac{1}{2B}\sum_i \Big[\mathrm{CE}\big(s\,\hat{x}_i^\top\hat{T},
        p_i\big) + \mathrm{CE}\big(s\,\hat{t}_i^\top\hat{X}, p_i\big)\Big]

    with unit image and text embeddings :math:`\hat{x}_i, \hat{t}_i`, the
    model's logit scale :math:`s = \min(e^{\text{logit\_scale}}, 100)` and the
    target :math:`p_i` uniform over the scenes holding the same objects as
    scene :math:`i`.

    Args:
        model (torch.nn.Module): an ``open_clip.CLIP``.
        batch (SceneSample): a batch of scenes (images in ``[0, 1]``).
        tokenizer (Callable): maps the captions to token ids.

    Returns:
        Tensor: the scalar loss.
    """
    images = model.encode_image(_normalise(batch.image), normalize=True)
    texts = model.encode_text(tokenizer(list(batch.caption)), normalize=True)
    scale = model.logit_scale.exp().clamp(max=100.0)
    logits = scale * images @ texts.T
    target = _same_objects(batch.shapes, batch.colours).float()
    target = target / target.sum(-1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@torch.no_grad()
def zero_shot(
    model: CLIP,
    tokenizer: Callable[..., torch.Tensor],
    n: int = 1000,
    seed: int = 1,
    split: str = "test",
    batch_size: int = 250,
    objects: Union[int, Tuple[int, int]] = (1, 3),
) -> Dict[str, Any]:
    r"""Zero-shot accuracies of a ``synthetic_clip``-style model on
    ``SyntheticScenes(n, seed, split, objects=objects)``, by the cosine
    similarity of the image to prompts.

    Per object of every scene:

    * ``shape_accuracy``: the object's shape is the argmax over the 8 prompts
      ``"a {its colour} {shape}"`` (chance 1/8);
    * ``colour_accuracy``: its colour is the argmax over the 8 prompts
      ``"a {colour} {its shape}"`` (chance 1/8);
    * ``object_recall``: it is among the ``k`` best of all 64
      ``"a {colour} {shape}"`` prompts, ``k`` the number of objects of its
      scene (chance ``k / 64``).

    On the single-object scenes only (``single_object``): ``object_accuracy``
    (64-way), and zero-shot by prompt kinds the captions never contain:
    ``shape_only_accuracy`` (argmax over ``"a {shape}"``) and
    ``colour_only_accuracy`` (argmax over ``"a {colour} object"``).

    Args:
        model (torch.nn.Module): an ``open_clip.CLIP`` taking normalised
            images of the dataset's size.
        tokenizer (Callable): its tokenizer.
        n (int, optional): number of held-out scenes.
            Default: 1000
        seed (int, optional): seed of the held-out scenes.
            Default: 1
        split (str, optional): their split.
            Default: ``"test"``
        batch_size (int, optional): images per forward pass.
            Default: 250
        objects (int or tuple[int, int], optional): objects per scene.
            Default: ``(1, 3)``

    Returns:
        dict: the accuracies above, ``objects`` (number of objects scored),
        and ``chance`` (the accuracy of guessing, per entry).

    Examples::

        >>> clip, transform, tokenizer, meta = captum_vit.zoo.load("synthetic_clip")
        >>> zero_shot(clip, tokenizer, n=200)["colour_accuracy"] > 0.5
        True
    """
    model.eval()
    image_size = model.visual.image_size[0]
    data = SyntheticScenes(
        n, seed=seed, split=split, image_size=image_size, objects=objects
    )
    texts = model.encode_text(tokenizer(all_prompts()), normalize=True)
    shape_texts = model.encode_text(
        tokenizer([object_prompt(shape=s) for s in range(len(CLASS_NAMES))]),
        normalize=True,
    )
    colour_texts = model.encode_text(
        tokenizer([object_prompt(colour=c) for c in range(len(COLOUR_NAMES))]),
        normalize=True,
    )
    n_shapes, n_colours = len(CLASS_NAMES), len(COLOUR_NAMES)
    counts = dict.fromkeys(["objects", "shape", "colour", "recall", "chance"], 0.0)
    single = dict.fromkeys(["images", "object", "shape_only", "colour_only"], 0.0)
    for start in range(0, n, batch_size):
        batch = [data[i] for i in range(start, min(n, start + batch_size))]
        images = torch.stack([s.image for s in batch])
        feats = model.encode_image(_normalise(images), normalize=True)
        sims = (feats @ texts.T).view(-1, n_shapes, n_colours)
        for b, sample in enumerate(batch):
            present = sample.shapes >= 0
            shapes, colours = sample.shapes[present], sample.colours[present]
            k = len(shapes)
            top = sims[b].flatten().topk(k).indices
            for s, c in zip(shapes.tolist(), colours.tolist()):
                counts["objects"] += 1
                counts["shape"] += float(sims[b, :, c].argmax() == s)
                counts["colour"] += float(sims[b, s, :].argmax() == c)
                counts["recall"] += float(s * n_colours + c in top.tolist())
                counts["chance"] += k / (n_shapes * n_colours)
            if k == 1:
                s, c = int(shapes[0]), int(colours[0])
                single["images"] += 1
                single["object"] += float(int(top[0]) == s * n_colours + c)
                single["shape_only"] += float((feats[b] @ shape_texts.T).argmax() == s)
                single["colour_only"] += float(
                    (feats[b] @ colour_texts.T).argmax() == c
                )
    m, m1 = counts["objects"], max(single["images"], 1.0)
    return {
        "objects": int(m),
        "shape_accuracy": counts["shape"] / m,
        "colour_accuracy": counts["colour"] / m,
        "object_recall": counts["recall"] / m,
        "single_object": {
            "images": int(single["images"]),
            "object_accuracy": single["object"] / m1,
            "shape_only_accuracy": single["shape_only"] / m1,
            "colour_only_accuracy": single["colour_only"] / m1,
        },
        "chance": {
            "shape_accuracy": 1 / n_shapes,
            "colour_accuracy": 1 / n_colours,
            "object_recall": counts["chance"] / m,
            "single_object": {
                "object_accuracy": 1 / (n_shapes * n_colours),
                "shape_only_accuracy": 1 / n_shapes,
                "colour_only_accuracy": 1 / n_colours,
            },
        },
    }


def train(
    seed: int = 0,
    steps: Union[int, Sequence[int]] = 900,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    warmup: int = 100,
    threads: int = 1,
    workers: int = 1,
    log_every: int = 100,
    config: Optional[Dict[str, Any]] = None,
    objects: Union[int, Tuple[int, int]] = (1, 3),
    init_state: Optional[Dict[str, torch.Tensor]] = None,
    start_cycle: int = 0,
) -> CLIP:
    r"""Train an open_clip ``CLIP`` contrastively on fresh captioned scenes.

    Same schedule as :func:`captum_vit.zoo.train.train` (AdamW, linear
    warm-up, cosine decay, optional warm-restart cycles), with
    :func:`contrastive_loss` on :class:`~captum_vit.data.SyntheticScenes`
    drawn from ``seed`` (``split="train"``).

    Args:
        seed (int, optional): seed of the initialisation, of the training
            scenes and of their order.
            Default: 0
        steps (int or Sequence[int], optional): optimiser steps of each cycle.
            Default: 900
        batch_size (int, optional): image-caption pairs per step.
            Default: 128
        lr (float, optional): peak AdamW learning rate.
            Default: 2e-3
        weight_decay (float, optional): AdamW weight decay.
            Default: 0.05
        warmup (int, optional): warm-up steps of every cycle.
            Default: 100
        threads (int, optional): torch threads of the training process.
            Default: 1
        workers (int, optional): data-loader processes drawing the scenes.
            Default: 1
        log_every (int, optional): print the running loss every this many
            steps, and validation zero-shot accuracies every five times that
            (0: never).
            Default: 100
        config (dict, optional): model config; :data:`DEFAULT_CONFIG` when
            None.
            Default: None
        objects (int or tuple[int, int], optional): objects per training
            scene.
            Default: ``(1, 3)``
        init_state (dict, optional): resume from these weights.
            Default: None
        start_cycle (int, optional): resume: the first cycle to run.
            Default: 0

    Returns:
        torch.nn.Module: the trained ``open_clip.CLIP``, in eval mode.

    Examples::

        >>> model = train(seed=0, steps=10)
    """
    config = config or DEFAULT_CONFIG
    tokenizer = clip_tokenizer(config)
    image_size = config["vision_cfg"]["image_size"]

    def validate(model: CLIP) -> str:
        acc = zero_shot(model, tokenizer, n=256, seed=seed + 10_000, split="val")
        return (
            f"val shape {acc['shape_accuracy']:.3f} "
            f"colour {acc['colour_accuracy']:.3f} "
            f"recall {acc['object_recall']:.3f}"
        )

    return train_cycles(
        lambda: build_model(config),
        lambda n: SyntheticScenes(
            n, seed=seed, split="train", image_size=image_size, objects=objects
        ),
        lambda model, batch: contrastive_loss(model, batch, tokenizer),
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
        validate=validate,
    )


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The command line: train, evaluate, write the weights and metadata."""
    args = parse_arguments(
        argv, __doc__.split("\n\n")[0], "synthetic_clip", [900, 900], 128, 2e-3
    )
    vocab_size = DEFAULT_CONFIG["text_cfg"]["vocab_size"]
    model, seconds = train_from_args(
        train, args, lambda state: unpack_token_embedding(state, vocab_size)
    )
    tokenizer = clip_tokenizer(DEFAULT_CONFIG)
    metrics = zero_shot(model, tokenizer, n=args.eval_n, seed=eval_seed(args))
    meta = {
        "name": args.name,
        "kind": "clip",
        "config": DEFAULT_CONFIG,
        "tokenizer": {
            "class": "open_clip.SimpleTokenizer",
            "context_length": DEFAULT_CONFIG["text_cfg"]["context_length"],
        },
        "prompt": "captum_vit.data.object_prompt(shape, colour): 'a red disk'",
        "shapes": list(CLASS_NAMES),
        "colours": list(COLOUR_NAMES),
        "mean": list(MEAN),
        "std": list(STD),
        "input_range": [0.0, 1.0],
        "training": {
            **training_record(args, "python -m captum_vit.zoo.train_clip", seconds),
            "dataset": "SyntheticScenes",
            "objects": [1, 3],
        },
        "held_out": held_out_record(args, "SyntheticScenes", metrics),
    }
    save(pack_token_embedding(model.state_dict()), meta, args.out, args.name)
    return meta


if __name__ == "__main__":
    main()
