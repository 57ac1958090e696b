r"""Embedded default models: small timm ViTs trained by a script in this
repository on the bundled synthetic benchmark, shipped as package data, so
that explanations and quality metrics can run on a model that learned
something without any download.

``synthetic_vit`` is a timm ``VisionTransformer`` (64x64 inputs, 8x8 patches,
class token, ``global_pool="token"``) trained by
``python -m captum_vit.zoo.train --seed 0`` on
:class:`captum_vit.data.SyntheticObjects`; its JSON metadata records the
config, class names, normalisation, training seed and held-out accuracy.

``synthetic_swin`` is a timm ``SwinTransformer`` (64x64 inputs, 8x8 patches,
4x4 windows, two stages of 8x8 and 4x4 tokens, average pooling) trained the
same way by ``python -m captum_vit.zoo.train --arch swin --seed 0 --steps
2500``: the windowed, hierarchical model of the benchmark.
"""

import json
import os
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

import torch

from ._build import build_model

_WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


class Normalize(torch.nn.Module):
    r"""Per-channel normalisation ``(x - mean) / std`` of ``[0, 1]`` images,
    the preprocessing of a zoo model. A module, so that
    ``torch.nn.Sequential(zm.transform, zm.model)`` maps raw images to logits.

    Args:
        mean (Sequence[float]): per-channel mean.
        std (Sequence[float]): per-channel standard deviation.

    Examples::

        >>> norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        >>> norm(torch.ones(3, 64, 64)).unique()
        tensor([2.])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(-1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise ``(C, H, W)`` or ``(B, C, H, W)`` images."""
        return (images - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class ZooModel(NamedTuple):
    r"""What :func:`load` returns.

    Attributes:
        model (torch.nn.Module): the timm ``VisionTransformer`` (or
            ``SwinTransformer``), in eval mode, taking normalised images.
        transform (Callable): the preprocessing (:class:`Normalize`) mapping
            float ``[0, 1]`` images to the model's input.
        classes (list[str]): class names, by output index.
        meta (dict): the model's JSON metadata: ``config``, ``mean``, ``std``,
            ``training`` (seed, steps, ...) and ``held_out`` (accuracy, ...).
    """

    model: torch.nn.Module
    transform: Callable[[torch.Tensor], torch.Tensor]
    classes: List[str]
    meta: Dict[str, Any]


def list_models() -> List[str]:
    r"""Names of the embedded models.

    Returns:
        list[str]: sorted names accepted by :func:`load`.

    Examples::

        >>> list_models()
        ['synthetic_swin', 'synthetic_vit']
    """
    if not os.path.isdir(_WEIGHTS_DIR):
        return []
    names = {
        f[: -len(".safetensors")]
        for f in os.listdir(_WEIGHTS_DIR)
        if f.endswith(".safetensors")
    }
    return sorted(n for n in names if os.path.exists(_paths(n)[1]))


def _paths(name: str) -> Tuple[str, str]:
    base = os.path.join(_WEIGHTS_DIR, name)
    return base + ".safetensors", base + ".json"


def load(
    name: str = "synthetic_vit", device: Any = "cpu", dynamic_img_size: bool = False
) -> ZooModel:
    r"""Load an embedded model.

    The weights are read with ``safetensors`` and loaded strictly into a
    freshly built timm model; every call returns a new model.

    Args:
        name (str, optional): one of :func:`list_models`.
            Default: ``"synthetic_vit"``
        device (str or torch.device, optional): where to put model and
            transform.
            Default: ``"cpu"``
        dynamic_img_size (bool, optional): build the timm model with
            ``dynamic_img_size=True``, so that it also takes inputs of other
            sizes (multiples of the patch size; position embeddings are
            interpolated), e.g. 128x128 :class:`~captum_vit.data.SyntheticGrid`
            grids whose cells have the training scale. Same outputs at the
            training size.
            Default: False

    Returns:
        ZooModel: ``(model, transform, classes, meta)``, the model in eval
        mode.

    Examples::

        >>> import captum_vit.zoo as zoo
        >>> from captum_vit.data import SyntheticObjects
        >>> model, transform, classes, meta = zoo.load("synthetic_vit")
        >>> images, labels, masks, boxes = SyntheticObjects(8, seed=1).tensors()
        >>> logits = model(transform(images))
        >>> [classes[i] for i in logits.argmax(-1)][:3]
        ['disk', 'square', 'triangle']
    """
    from safetensors.torch import load_file

    if name not in list_models():
        raise ValueError(f"unknown zoo model {name!r}; available: {list_models()}")
    weights_path, meta_path = _paths(name)
    with open(meta_path) as f:
        meta = json.load(f)
    config = dict(meta["config"])
    if dynamic_img_size:
        config["dynamic_img_size"] = True
    model = build_model(config)
    model.load_state_dict(load_file(weights_path), strict=True)
    model = model.to(device).eval()
    transform = Normalize(meta["mean"], meta["std"]).to(device)
    return ZooModel(model, transform, list(meta["classes"]), meta)


__all__ = ["Normalize", "ZooModel", "list_models", "load"]
