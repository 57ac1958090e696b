"""The visualiser's only way into the core: everything it needs from the
public API of :mod:`captum_vit.attr` and :mod:`captum_vit.metrics`, in one
place (``create_method``, ``list_methods``, ``get_method``, ``describe``,
``forward_func``, ``patch_window``, ``text_similarity``,
:class:`~captum_vit.attr.RawAttention` and the metric registry).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Type

import torch
from torch import Tensor, nn

from ..attr import (
    RawAttention,
    create_method,
    describe,
    forward_func,
    get_method,
    list_methods,
    text_similarity,
)
from ..attr import patch_size as model_patch_size
from ..metrics import get_metric

__all__ = [
    "ModelInfo",
    "attention_maps",
    "create_method",
    "forward_func",
    "list_methods",
    "method_class",
    "metric_direction",
    "model_info",
    "patch_size",
    "text_similarity",
]


class ModelInfo(NamedTuple):
    """What the page shows of a model: family, blocks, heads."""

    family: str
    num_layers: int
    num_heads: int


def method_class(name: str) -> Type:
    """The class registered as ``name`` (for its signature and docstring).

    Raises:
        KeyError: no method of that name.
    """
    try:
        return get_method(name)
    except ValueError as err:
        raise KeyError(name) from err


def model_info(model: nn.Module) -> ModelInfo:
    """Family, number of blocks and heads of a stock ViT.

    Raises:
        TypeError: not a supported Vision Transformer.
    """
    info = describe(model)
    return ModelInfo(info.family, info.num_layers, info.num_heads)


def patch_size(model: nn.Module, inputs: Tensor) -> Optional[int]:
    """The side of a square patch, or None for rectangular patches."""
    return model_patch_size(model, strict=False)


def attention_maps(model: nn.Module, x: Tensor, layer: int) -> AttentionMaps:
    """Per-head attention of block ``layer`` for one image ``x`` ``(1, C, H, W)``.

    Returns:
        AttentionMaps: ``rows`` ``(heads, gh, gw)`` (the explained token's
        row over the patches: the class-token row, the patch mean for
        average-pooled models) and ``matrices`` ``(heads, N, N)``.
    """
    method = RawAttention(model, layer=layer, head_fusion=None)
    with torch.no_grad():
        rows = method.attribute(x, output="tokens")[0].float().cpu()
        matrices = method.attention_matrix(x)[0].float().cpu()
    return AttentionMaps(rows, matrices)


class AttentionMaps(NamedTuple):
    """See :func:`attention_maps`."""

    rows: Tensor
    matrices: Tensor


def metric_direction(name: str) -> str:
    """``"higher"`` or ``"lower"``: which value of metric ``name`` is better.

    Raises:
        ValueError: no metric of that name.
    """
    spec = get_metric(name)
    return spec.better(next(iter(spec.columns)))
