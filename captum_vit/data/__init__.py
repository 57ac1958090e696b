"""Datasets with ground truth: the bundled synthetic benchmark and loaders for
the real formats of the ViT-explainability literature.

Every dataset returns a :class:`Sample` (image, label, mask, box) where the
format has localisation ground truth, a :class:`ClassificationSample` (image,
label) where it has none, :class:`SyntheticGrid` a :class:`GridSample` and
:class:`SyntheticScenes` a :class:`SceneSample` (caption, per-object masks);
all are named tuples that ``torch.utils.data.default_collate`` batches.
Images are float tensors ``(3, H, W)`` in ``[0, 1]`` before ``transform``.
"""

from ._common import ClassificationSample, GridSample, Sample, box_from_mask
from .cifar import CIFAR10
from .covid import COVID_CLASSES, COVIDQUEx
from .imagenet import (
    IMAGE_EXTENSIONS,
    IMAGENET_S_IGNORE,
    ImageNetFolder,
    ImageNetS,
    ImageNetSegmentation,
    decode_imagenet_s,
)
from .scenes import (
    COLOUR_NAMES,
    MAX_OBJECTS,
    SceneSample,
    SyntheticScenes,
    object_prompt,
    render_scene,
)
from .synthetic import CLASS_NAMES, SyntheticGrid, SyntheticObjects, render_sample

__all__ = [
    "CIFAR10",
    "CLASS_NAMES",
    "COLOUR_NAMES",
    "COVIDQUEx",
    "COVID_CLASSES",
    "ClassificationSample",
    "GridSample",
    "IMAGE_EXTENSIONS",
    "IMAGENET_S_IGNORE",
    "ImageNetFolder",
    "ImageNetS",
    "ImageNetSegmentation",
    "MAX_OBJECTS",
    "Sample",
    "SceneSample",
    "SyntheticGrid",
    "SyntheticObjects",
    "SyntheticScenes",
    "box_from_mask",
    "decode_imagenet_s",
    "object_prompt",
    "render_sample",
    "render_scene",
]
