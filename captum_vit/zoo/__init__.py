r"""Embedded default models: small models trained by scripts in this
repository on the bundled synthetic data, shipped as package data, so that
explanations and quality metrics can run on a model that learned something
without any download.

``synthetic_vit`` is a timm ``VisionTransformer`` (64x64 inputs, 8x8 patches,
class token, ``global_pool="token"``) trained by
``python -m captum_vit.zoo.train --seed 0`` on
:class:`captum_vit.data.SyntheticObjects`; its JSON metadata records the
config, class names, normalisation, training seed and held-out accuracy.

``synthetic_swin`` is a timm ``SwinTransformer`` (64x64 inputs, 8x8 patches,
4x4 windows, two stages of 8x8 and 4x4 tokens, average pooling) trained the
same way by ``python -m captum_vit.zoo.train --arch swin --seed 0 --steps
2500``: the windowed, hierarchical model of the benchmark (a classifier, as
``synthetic_vit``).

``synthetic_clip`` is an ``open_clip.CLIP`` (a ViT image tower with class-token
pooling, 64x64 inputs, 8x8 patches, and a small text transformer with
open_clip's tokenizer) trained contrastively by
``python -m captum_vit.zoo.train_clip --seed 0`` on the captions of
:class:`captum_vit.data.SyntheticScenes`; its metadata records the config,
tokenizer, normalisation, training seed and held-out zero-shot accuracies.
It needs ``open_clip`` (``pip install 'captum-vit[clip]'``).
"""

import json
import os
from typing import (
    Any,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch

from ._build import build_clip, build_model, clip_tokenizer, unpack_token_embedding

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

    mean: torch.Tensor
    std: torch.Tensor

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


class ZooCLIP(NamedTuple):
    r"""What :func:`load` returns for a vision-language model
    (``kind == "clip"``).

    Attributes:
        model (torch.nn.Module): the ``open_clip.CLIP``, in eval mode;
            ``model.encode_image(transform(images))`` and
            ``model.encode_text(tokenizer(texts))`` give the embeddings
            (``normalize=True`` for unit length), ``model.logit_scale`` the
            learnt temperature.
        transform (Callable): the preprocessing (:class:`Normalize`) mapping
            float ``[0, 1]`` images to the image tower's input.
        tokenizer (Callable): open_clip's ``SimpleTokenizer`` with the model's
            context length: a list of strings to int64 token ids
            ``(len(texts), context_length)``.
        meta (dict): the model's JSON metadata: ``config``, ``tokenizer``,
            ``mean``, ``std``, ``training`` and ``held_out`` (zero-shot
            accuracies).
    """

    model: torch.nn.Module
    transform: Callable[[torch.Tensor], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    meta: Dict[str, Any]


def list_models(kind: Optional[str] = None) -> List[str]:
    r"""Names of the embedded models.

    Args:
        kind (str, optional): only the models of this kind: ``"classifier"``
            (:func:`load` returns a :class:`ZooModel`) or ``"clip"`` (a
            :class:`ZooCLIP`).
            Default: None (all)

    Returns:
        list[str]: sorted names accepted by :func:`load`.

    Examples::

        >>> list_models()
        ['synthetic_clip', 'synthetic_swin', 'synthetic_vit']
        >>> list_models(kind="classifier")
        ['synthetic_swin', 'synthetic_vit']
    """
    if kind not in (None, "classifier", "clip"):
        raise ValueError(f"kind must be None, 'classifier' or 'clip', got {kind!r}")
    if not os.path.isdir(_WEIGHTS_DIR):
        return []
    names = {
        f[: -len(".safetensors")]
        for f in os.listdir(_WEIGHTS_DIR)
        if f.endswith(".safetensors")
    }
    names = {n for n in names if os.path.exists(_paths(n)[1])}
    if kind is not None:
        names = {n for n in names if model_kind(n) == kind}
    return sorted(names)


def model_kind(name: str) -> str:
    r"""The kind of an embedded model: ``"classifier"`` or ``"clip"``.

    Args:
        name (str): one of :func:`list_models`.

    Returns:
        str: the ``kind`` recorded in its metadata (``"classifier"`` when
        none is).

    Examples::

        >>> model_kind("synthetic_clip")
        'clip'
    """
    with open(_paths(name)[1]) as f:
        return json.load(f).get("kind", "classifier")


def _paths(name: str) -> Tuple[str, str]:
    base = os.path.join(_WEIGHTS_DIR, name)
    return base + ".safetensors", base + ".json"


def load(
    name: str = "synthetic_vit", device: Any = "cpu", dynamic_img_size: bool = False
) -> Union[ZooModel, ZooCLIP]:
    r"""Load an embedded model.

    The weights are read with ``safetensors`` and loaded strictly into a
    freshly built model (timm for a classifier, ``open_clip.CLIP`` for a
    vision-language model); every call returns a new model.

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
            training size. Classifiers only.
            Default: False

    Returns:
        ZooModel or ZooCLIP: ``(model, transform, classes, meta)`` for a
        classifier, ``(model, transform, tokenizer, meta)`` for a CLIP model
        (:func:`model_kind`), the model in eval mode.

    Examples::

        >>> import captum_vit.zoo as zoo
        >>> from captum_vit.data import SyntheticObjects
        >>> model, transform, classes, meta = zoo.load("synthetic_vit")
        >>> images, labels, masks, boxes = SyntheticObjects(8, seed=1).tensors()
        >>> logits = model(transform(images))
        >>> [classes[i] for i in logits.argmax(-1)][:3]
        ['disk', 'square', 'triangle']
        >>> clip, transform, tokenizer, meta = zoo.load("synthetic_clip")
        >>> img = clip.encode_image(transform(images), normalize=True)
        >>> txt = clip.encode_text(tokenizer(["a red disk"]), normalize=True)
        >>> similarity = img @ txt.T  # (8, 1) cosine similarities
    """
    from safetensors.torch import load_file

    if name not in list_models():
        raise ValueError(f"unknown zoo model {name!r}; available: {list_models()}")
    weights_path, meta_path = _paths(name)
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("kind", "classifier") == "clip":
        if dynamic_img_size:
            raise ValueError(f"{name!r} is a CLIP model: no dynamic_img_size")
        return _load_clip(weights_path, meta, device)
    config = dict(meta["config"])
    if dynamic_img_size:
        config["dynamic_img_size"] = True
    model = build_model(config)
    model.load_state_dict(load_file(weights_path), strict=True)
    model = model.to(device).eval()
    transform = Normalize(meta["mean"], meta["std"]).to(device)
    return ZooModel(model, transform, list(meta["classes"]), meta)


def _load_clip(weights_path: str, meta: Dict[str, Any], device: Any) -> ZooCLIP:
    from safetensors.torch import load_file

    config = meta["config"]
    model = build_clip(config)
    state = unpack_token_embedding(
        load_file(weights_path), config["text_cfg"]["vocab_size"]
    )
    model.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    transform = Normalize(meta["mean"], meta["std"]).to(device)
    return ZooCLIP(model, transform, clip_tokenizer(config), meta)


__all__ = ["Normalize", "ZooCLIP", "ZooModel", "list_models", "load", "model_kind"]
