"""The visualiser on the embedded default model and the synthetic benchmark."""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

import torch

from ._visualizer import AttributionVisualizer


def default_visualizer(
    samples: int = 32,
    seed: int = 1,
    model: str = "synthetic_vit",
    replicas: int = 2,
    stream: Optional[TextIO] = None,
    **kwargs: Any,
) -> AttributionVisualizer:
    r"""An :class:`AttributionVisualizer` on an embedded model of
    :mod:`captum_vit.zoo` and images of the synthetic benchmark
    (:class:`captum_vit.data.SyntheticObjects`, ``split="test"``), with the
    softmax as score function: what ``captum-vit insights`` serves.

    For the vision-language ``synthetic_clip`` the images are captioned
    scenes (:class:`captum_vit.data.SyntheticScenes`) and the page has a
    prompt box (eight prompts to start with, one per shape); predictions are
    the softmax over the prompts of the model's image-text logits.

    Where the embedded weights are not installed (a source checkout before
    the training script has been run), a random-init timm ViT of the same
    shape is used instead and a warning is written to ``stream``.

    Args:
        samples (int, optional): benchmark images offered. Default: 32
        seed (int, optional): seed of the benchmark. Default: 1
        model (str, optional): name of the embedded model
            (:func:`captum_vit.zoo.list_models`: ``"synthetic_vit"`` or
            ``"synthetic_clip"``). Default: ``"synthetic_vit"``
        replicas (int, optional): see :class:`AttributionVisualizer`.
            Default: 2
        stream (file, optional): where warnings go. Default: ``sys.stderr``
        **kwargs: further keyword arguments of :class:`AttributionVisualizer`
            (``max_upload_bytes``, ``time_budget``, ...).

    Examples::

        >>> from captum_vit.insights import default_visualizer
        >>> default_visualizer(samples=16).serve(port=8050)
    """
    from .. import zoo
    from ..data import CLASS_NAMES, SyntheticObjects

    stream = sys.stderr if stream is None else stream
    if model in zoo.list_models(kind="clip"):
        return _clip_visualizer(model, samples, seed, replicas, **kwargs)
    if model in zoo.list_models(kind="classifier"):
        loaded = zoo.load(model)
        assert isinstance(loaded, zoo.ZooModel)
        net, transform, classes, _ = loaded
        name = model
    else:
        if model != "synthetic_vit":
            raise ValueError(
                f"unknown zoo model {model!r}; available: {zoo.list_models()}"
            )
        from timm.models.vision_transformer import VisionTransformer

        print(
            "warning: the embedded model's weights are not installed; showing a "
            "random-init ViT (64 px, patch 8) instead. Train them with "
            "`python -m captum_vit.zoo.train`.",
            file=stream,
        )
        torch.manual_seed(0)
        net = VisionTransformer(
            img_size=64,
            patch_size=8,
            embed_dim=64,
            depth=4,
            num_heads=4,
            num_classes=len(CLASS_NAMES),
        ).eval()
        transform = zoo.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        classes = list(CLASS_NAMES)
        name = "random-init ViT (no embedded weights)"
    dataset = SyntheticObjects(samples, seed=seed, split="test")
    return AttributionVisualizer(
        models=[net],
        classes=classes,
        dataset=dataset,
        score_func=lambda out: out.softmax(-1),
        transform=transform,
        model_names=[name],
        replicas=replicas,
        **kwargs,
    )


def _clip_visualizer(
    name: str, samples: int, seed: int, replicas: int, **kwargs: Any
) -> AttributionVisualizer:
    """The visualiser of an embedded vision-language model (a prompt box)."""
    from .. import zoo
    from ..data import CLASS_NAMES, SyntheticScenes, object_prompt

    net, transform, tokenizer, _ = zoo.load(name)
    scenes = SyntheticScenes(samples, seed=seed, split="test")
    prompts = [object_prompt(i, i) for i in range(len(CLASS_NAMES))]
    return AttributionVisualizer(
        models=[net],
        classes=prompts,
        dataset=[scenes[i].image for i in range(len(scenes))],
        score_func=lambda out: out.softmax(-1),
        transform=transform,
        model_names=[name],
        replicas=replicas,
        tokenizer=tokenizer,
        **kwargs,
    )
