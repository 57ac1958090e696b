"""What ``captum-vit explain`` computes: maps of several methods on a few images,
with their deletion / insertion AUC and, where a mask is known, the pointing
game."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ._models import LoadedModel
from ._runner import _patch_size

#: Methods ``captum-vit explain`` shows when ``--methods`` is not given (those
#: of them that are registered).
EXPLAIN_METHODS = (
    "raw_attention",
    "rollout",
    "grad_sam",
    "generic_attention",
    "transformer_lrp",
)


def default_methods(model: Optional[torch.nn.Module] = None) -> List[str]:
    """The registered methods among :data:`EXPLAIN_METHODS` (that apply to
    ``model``, if given)."""
    from ..attr import list_methods

    available = set(list_methods(model=model))
    return [m for m in EXPLAIN_METHODS if m in available]


def explain_images(
    lm: LoadedModel,
    images: Tensor,
    methods: Sequence[str],
    target: Optional[int] = None,
    masks: Optional[Tensor] = None,
) -> Dict[str, Any]:
    r"""Explain normalised ``images`` with ``methods`` and score every map.

    Scores per image and method, the columns of the registry's metrics
    (:func:`captum_vit.metrics.get_metric`) ``"deletion"`` (``deletion_auc``,
    lower is better) and ``"insertion"`` (``insertion_auc``, higher is better),
    patch by patch, on the softmax of the explained class; with ``masks``,
    ``"pointing_game"`` (1.0 when the map's maximum lies on the object).

    Args:
        lm (LoadedModel): the model (:func:`load_model`).
        images (Tensor): ``(B, C, H, W)`` normalised images.
        methods (sequence of str): registry names.
        target (int, optional): class to explain. Default: None (predicted)
        masks (Tensor, optional): ``(B, H, W)`` object masks. Default: None

    Returns:
        dict: ``maps`` (method -> attribution), ``logits``, ``predictions``,
        ``targets`` and ``scores`` (one dict per image: method -> score name
        -> value).
    """
    from ..attr import create_method
    from ..metrics import MetricContext, get_metric

    model = lm.model
    with torch.no_grad():
        logits = model(images)
    pred = logits.argmax(-1)
    tgt = pred if target is None else torch.full_like(pred, int(target))
    names = ["deletion", "insertion"] + (["pointing_game"] if masks is not None else [])
    specs = [get_metric(n) for n in names]
    patch_size = _patch_size(model, images)
    maps: Dict[str, Tensor] = {}
    scores: List[Dict[str, Dict[str, float]]] = [{} for _ in range(len(images))]
    for name in methods:
        a = create_method(name, model).attribute(images, target=tgt).detach()
        maps[name] = a
        ctx = MetricContext(
            forward_func=model,
            inputs=images,
            attributions=a,
            target=tgt,
            masks=masks,
            patch_size=patch_size,
        )
        cols = {k: v for spec in specs for k, v in spec.compute(ctx).values.items()}
        for i in range(len(images)):
            scores[i][name] = {k: float(v[i]) for k, v in cols.items()}
    return {
        "maps": maps,
        "logits": logits,
        "predictions": pred,
        "targets": tgt,
        "scores": scores,
    }


def mean_scores(
    scores: List[Dict[str, Dict[str, float]]],
) -> Dict[str, Dict[str, float]]:
    """Mean of every score over the images (NaN left out)."""
    out: Dict[str, Dict[str, List[float]]] = {}
    for per_image in scores:
        for method, vals in per_image.items():
            for k, v in vals.items():
                out.setdefault(method, {}).setdefault(k, [])
                if not math.isnan(v):
                    out[method][k].append(v)
    return {
        m: {k: (math.fsum(v) / len(v) if v else float("nan")) for k, v in d.items()}
        for m, d in out.items()
    }
