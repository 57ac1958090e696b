"""The visualiser's only way into the core: everything it needs from
:mod:`captum_vit.attr`, :mod:`captum_vit.metrics` and the models.

Most of it is public API already (``create_method``, ``list_methods``,
``forward_func``, ``patch_window``, the metric functions). What is not yet is
reached here and nowhere else in :mod:`captum_vit.insights`; each such place
is marked ``CORE-API SWAP`` with the public name that replaces it:

* :func:`method_class` reads the private registry table
  (``attr._registry._METHODS``) -> ``captum_vit.attr.get_method(name)``;
* :func:`model_info` asks ``captum_vit.adapters`` for the family, depth and
  heads -> the public description of a model in :mod:`captum_vit.attr`;
* :func:`attention_maps` traces one layer with ``adapters.Tracer`` and reads
  the explained row with ``pool_weights`` -> ``RawAttention(model, layer=l,
  head_fusion=None).attribute(x, output="tokens")`` for the rows; the full
  ``N x N`` matrices (the page's "matrix" view) have no public replacement;
* :func:`metric_direction` reads the benchmark's metric table
  (``captum_vit.benchmark.get_metric``) -> ``captum_vit.metrics.get_metric``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Type

import torch
from torch import Tensor, nn

from ..attr import create_method, forward_func, list_methods, patch_window

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
    from ..attr import _registry  # CORE-API SWAP: captum_vit.attr.get_method(name)

    return _registry._METHODS[name]


def model_info(model: nn.Module) -> ModelInfo:
    """Family, number of blocks and heads of a stock ViT.

    Raises:
        TypeError: not a supported Vision Transformer.
    """
    from .. import adapters  # CORE-API SWAP: public model description in attr

    ad = adapters.get(model)
    return ModelInfo(str(ad.family), int(ad.num_layers), int(ad.num_heads))


def patch_size(model: nn.Module, inputs: Tensor) -> Optional[int]:
    """The side of a square patch, or None for rectangular patches."""
    _, ph, pw = patch_window(model, inputs)
    return int(ph) if ph == pw else None


def attention_maps(model: nn.Module, x: Tensor, layer: int) -> AttentionMaps:
    """Per-head attention of block ``layer`` for one image ``x`` ``(1, C, H, W)``.

    Returns:
        AttentionMaps: ``rows`` ``(heads, gh, gw)`` (the explained token's
        row over the patches: the class-token row, the patch mean for
        average-pooled models) and ``matrices`` ``(heads, N, N)``.
    """
    # CORE-API SWAP: rows = RawAttention(model, layer=layer, head_fusion=None)
    #   .attribute(x, output="tokens")[0]; matrices keep this Tracer (no public API)
    from .. import adapters

    ad = adapters.get(model)
    tracer = adapters.Tracer(layers=[layer])
    with torch.no_grad(), ad.trace(tracer):
        ad.forward(x)
    attn = tracer.attentions[layer][0].float().cpu()  # (H, N, N)
    grid = ad.grid_size((int(x.shape[-2]), int(x.shape[-1])))
    w = ad.pool_weights(attn.shape[-1], dtype=attn.dtype)
    rows = (w @ attn)[:, ad.num_prefix_tokens :].reshape(attn.shape[0], *grid)
    return AttentionMaps(rows, attn)


class AttentionMaps(NamedTuple):
    """See :func:`attention_maps`."""

    rows: Tensor
    matrices: Tensor


def metric_direction(name: str) -> str:
    """``"higher"`` or ``"lower"``: which value of metric ``name`` is better.

    Raises:
        ValueError: no metric of that name.
    """
    from ..benchmark import get_metric  # CORE-API SWAP: captum_vit.metrics.get_metric

    columns = get_metric(name).columns
    return "higher" if next(iter(columns.values())) else "lower"
