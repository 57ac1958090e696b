"""Model loading for the command line and the benchmark: the embedded default,
a timm name (``pretrained=True``) or a local checkpoint file."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import torch

#: The embedded default model of :mod:`captum_vit.zoo`.
DEFAULT_MODEL = "synthetic_vit"

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class LoadedModel(NamedTuple):
    r"""A model ready to explain, with what is needed to feed it.

    Attributes:
        model (torch.nn.Module): the model in eval mode; it takes normalised
            images.
        transform (torch.nn.Module): maps float ``[0, 1]`` images to the model's
            input (:class:`captum_vit.zoo.Normalize`).
        classes (list[str]): class names, by output index.
        mean (tuple[float, ...]): normalisation mean of ``transform``.
        std (tuple[float, ...]): normalisation std of ``transform``.
        image_size (int): side of the square input the model takes.
        source (str): what was loaded, in words.
        embedded (bool): ``True`` for an embedded zoo model (trained on the
            synthetic benchmark, whose labels it predicts).
    """

    model: torch.nn.Module
    transform: torch.nn.Module
    classes: List[str]
    mean: tuple
    std: tuple
    image_size: int
    source: str
    embedded: bool


def _state_dict_from_file(path: str) -> Dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    # weights_only: a checkpoint is data, never code to run
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not all(
        isinstance(v, torch.Tensor) for v in ckpt.values()
    ):
        raise ValueError(f"{path}: not a state_dict (a dict of tensors)")
    return {k[7:] if k.startswith("module.") else k: v for k, v in ckpt.items()}


def _num_classes(state: Dict[str, torch.Tensor]) -> Optional[int]:
    for key in ("head.weight", "head.fc.weight", "classifier.weight"):
        if key in state:
            return int(state[key].shape[0])
    return None


def _finish(
    model: torch.nn.Module,
    classes: Optional[Sequence[str]],
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int,
    source: str,
    embedded: bool = False,
) -> LoadedModel:
    from ..zoo import Normalize

    model = model.eval()
    num = int(getattr(model, "num_classes", 0) or 0)
    names = list(classes) if classes is not None else [str(i) for i in range(num)]
    return LoadedModel(
        model,
        Normalize(mean, std),
        names,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        int(image_size),
        source,
        embedded,
    )


def load_model(
    spec: Optional[str] = None,
    model_name: Optional[str] = None,
    img_size: Optional[int] = None,
    num_classes: Optional[int] = None,
) -> LoadedModel:
    r"""Load the model that ``captum-vit explain`` / ``benchmark`` explain.

    ``spec`` is one of:

    * ``None`` or the name of an embedded model (:func:`captum_vit.zoo.list_models`):
      the embedded default, trained on the synthetic benchmark, no download;
    * a local checkpoint file: a ``.safetensors`` file, or a timm-style
      ``state_dict`` file (``.pth``, ``.pt``, ``.bin``; a bare state dict or one
      under ``state_dict`` / ``model`` / ``state_dict_ema``, loaded with
      ``weights_only=True``). The architecture is the timm name ``model_name``;
      a ``.safetensors`` file written by :mod:`captum_vit.zoo.train` may instead
      have its JSON metadata (same name, ``.json``) next to it. The number of
      classes is read from the classifier weight when ``num_classes`` is None;
    * any other string: a timm model name, created with ``pretrained=True``
      (this downloads the weights, on a machine that can).

    Normalisation and input size come from the model's timm ``pretrained_cfg``
    (ImageNet statistics when it has none).

    Args:
        spec (str, optional): embedded model name, checkpoint path or timm name.
            Default: None (the embedded default)
        model_name (str, optional): timm architecture of a checkpoint.
            Default: None
        img_size (int, optional): input size passed to ``timm.create_model``
            for a checkpoint or timm name. Default: None (the model's default)
        num_classes (int, optional): classes of a checkpoint's head.
            Default: None (read from the checkpoint)

    Returns:
        LoadedModel: model (eval mode), transform, classes, mean, std,
        image size, description.

    Examples::

        >>> lm = load_model()  # the embedded default
        >>> lm.image_size, lm.classes[:2]
        (64, ['disk', 'square'])
        >>> lm = load_model("ckpt.pth", model_name="vit_tiny_patch16_224")
    """
    from .. import zoo

    if spec is None or (spec in zoo.list_models() and not os.path.exists(spec)):
        from ..attr import describe

        zm = zoo.load(spec or DEFAULT_MODEL)
        return _finish(
            zm.model,
            zm.classes,
            zm.meta["mean"],
            zm.meta["std"],
            zm.meta["config"]["img_size"],
            f"embedded model {spec or DEFAULT_MODEL!r} ({describe(zm.model).num_layers}"
            f" blocks, trained on the synthetic benchmark)",
            embedded=True,
        )
    if spec is not None and os.path.isfile(spec):
        return _load_checkpoint(spec, model_name, img_size, num_classes)
    if spec is not None and (
        os.sep in spec or spec.endswith((".pth", ".pt", ".bin", ".safetensors"))
    ):
        raise FileNotFoundError(f"no checkpoint file {spec}")
    import timm

    kwargs: Dict[str, Any] = {}
    if img_size is not None:
        kwargs["img_size"] = img_size
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(spec, pretrained=True, **kwargs)
    return _from_timm_cfg(model, f"timm {spec!r} (pretrained)")


def _from_timm_cfg(model: torch.nn.Module, source: str) -> LoadedModel:
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    mean = cfg.get("mean") or _IMAGENET_MEAN
    std = cfg.get("std") or _IMAGENET_STD
    size = None
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None):
        size = patch_embed.img_size[-1]
    if size is None:
        size = cfg.get("input_size", (3, 224, 224))[-1]
    return _finish(model, None, mean, std, size, source)


def _load_checkpoint(
    path: str,
    model_name: Optional[str],
    img_size: Optional[int],
    num_classes: Optional[int],
) -> LoadedModel:
    state = _state_dict_from_file(path)
    meta_path = os.path.splitext(path)[0] + ".json"
    if model_name is None and path.endswith(".safetensors"):
        if not os.path.exists(meta_path):
            raise ValueError(
                f"{path}: give the timm architecture with --model-name "
                f"(or put the zoo metadata {meta_path} next to it)"
            )
        from ..zoo import _build

        with open(meta_path) as f:
            meta = json.load(f)
        model = _build.build_vit(meta["config"])
        model.load_state_dict(state, strict=True)
        return _finish(
            model,
            meta.get("classes"),
            meta["mean"],
            meta["std"],
            meta["config"]["img_size"],
            f"checkpoint {path}",
        )
    if model_name is None:
        raise ValueError(f"{path}: give the timm architecture with --model-name")
    import timm

    kwargs: Dict[str, Any] = {}
    if img_size is not None:
        kwargs["img_size"] = img_size
    n = num_classes if num_classes is not None else _num_classes(state)
    if n is not None:
        kwargs["num_classes"] = n
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    model.load_state_dict(state, strict=True)
    return _from_timm_cfg(model, f"checkpoint {path} ({model_name})")
