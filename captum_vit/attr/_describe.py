"""What front-ends need to know about a model, without the adapter layer.

The CLI, the benchmark and the visualiser describe a model (its family,
depth, heads, patch size, grid) through these functions of the public
:mod:`captum_vit.attr` API; only :mod:`captum_vit.adapters` knows how each
family stores it.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

from torch import nn

from .. import adapters

__all__ = ["ModelInfo", "describe", "patch_size", "grid_size"]


class ModelInfo(NamedTuple):
    """A Vision Transformer's description (see :func:`describe`)."""

    #: the adapter's family name, e.g. ``"timm VisionTransformer (...)"``
    family: str
    #: number of transformer blocks
    num_layers: int
    #: attention heads per block
    num_heads: int
    #: ``(ph, pw)`` in pixels
    patch_size: Tuple[int, int]
    #: class, distillation and register tokens before the patch tokens
    num_prefix_tokens: int
    #: number of logits
    num_classes: int
    #: ``"token"`` (prefix tokens feed the head) or ``"avg"`` (patch mean)
    pooling: str


def describe(model: nn.Module) -> ModelInfo:
    """Describe a stock Vision Transformer (wrappers are unwrapped).

    Args:
        model (torch.nn.Module): a model any method accepts.

    Returns:
        ModelInfo: family, depth, heads, patch size, prefix tokens, classes
        and pooling.

    Raises:
        captum_vit.adapters.UnsupportedModelError: not a supported model (so
            this also checks a model up front).

    Examples::

        >>> import timm, captum_vit as cv
        >>> info = cv.attr.describe(timm.create_model("vit_tiny_patch16_224"))
        >>> info.num_layers, info.num_heads, info.patch_size
        (12, 3, (16, 16))
    """
    a = adapters.get(model)
    ph, pw = a.patch_size
    return ModelInfo(
        family=a.family,
        num_layers=int(a.num_layers),
        num_heads=int(a.num_heads),
        patch_size=(int(ph), int(pw)),
        num_prefix_tokens=int(a.num_prefix_tokens),
        num_classes=int(a.num_classes),
        pooling=a.pooling,
    )


def patch_size(model: nn.Module, strict: bool = True) -> Optional[int]:
    """The side of the model's square patches, in pixels (e.g. the
    ``patch_size`` argument of the metrics).

    Args:
        model (torch.nn.Module): a model any method accepts.
        strict (bool, optional): raise for rectangular patches; with
            ``strict=False`` they give ``None`` (what the metrics take to work
            on pixels instead of patches). Default: True

    Raises:
        ValueError: the patches are not square and ``strict`` is set;
            :func:`describe` gives ``(ph, pw)``.

    Examples::

        >>> cv.attr.patch_size(timm.create_model("vit_tiny_patch16_224"))
        16
    """
    ph, pw = describe(model).patch_size
    if ph == pw:
        return ph
    if not strict:
        return None
    raise ValueError(
        f"the model's patches are {ph}x{pw}, not square; use "
        "describe(model).patch_size for (ph, pw)"
    )


def grid_size(model: nn.Module, image_size: Sequence[int]) -> Tuple[int, int]:
    """The patch grid ``(gh, gw)`` of the model for images of ``image_size``.

    Args:
        model (torch.nn.Module): a model any method accepts.
        image_size (sequence of int): ``(H, W)``.

    Raises:
        ValueError: the model cannot take images of this size.

    Examples::

        >>> cv.attr.grid_size(timm.create_model("vit_tiny_patch16_224"), (224, 224))
        (14, 14)
    """
    a = adapters.get(model)
    size = (int(image_size[0]), int(image_size[1]))
    a.check_image_size(size)
    gh, gw = a.grid_size(size)
    return int(gh), int(gw)
