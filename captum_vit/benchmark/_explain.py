"""What ``captum-vit explain`` computes: maps of several methods on a few images,
with their deletion / insertion AUC and, where a mask is known, the pointing
game; for a vision-language model, one map per image and prompt."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..attr import patch_size as model_patch_size
from ._models import LoadedModel

#: Methods ``captum-vit explain`` shows when ``--methods`` is not given (those
#: of them that are registered).
EXPLAIN_METHODS = (
    "raw_attention",
    "rollout",
    "grad_sam",
    "generic_attention",
    "transformer_lrp",
)


#: Methods ``captum-vit explain --text`` shows for a vision-language model
#: when ``--methods`` is not given.
EXPLAIN_TEXT_METHODS = (
    "raw_attention",
    "rollout",
    "grad_sam",
    "generic_attention",
    "legrad",
    "grad_eclip",
    "attn_lrp",
)


def default_methods(
    model: Optional[torch.nn.Module] = None, text: bool = False
) -> List[str]:
    """The registered methods among :data:`EXPLAIN_METHODS` (``text``:
    :data:`EXPLAIN_TEXT_METHODS`) that apply to ``model``, if given
    (:func:`captum_vit.attr.list_methods`)."""
    from ..attr import list_methods

    available = set(list_methods(model=model))
    wanted = EXPLAIN_TEXT_METHODS if text else EXPLAIN_METHODS
    return [m for m in wanted if m in available]


def explain_prompts(
    lm: LoadedModel,
    images: Tensor,
    prompts: Sequence[str],
    methods: Sequence[str],
) -> Dict[str, Any]:
    r"""Explain every image for every prompt with a vision-language model.

    The model's image-text logits (:func:`captum_vit.text_similarity`, the
    prompts embedded once) are explained for each (image, prompt) row,
    image-major: row ``i * P + p`` is image ``i`` for prompt ``p``. Scores
    per row: the registry's ``"similarity_deletion"`` and
    ``"similarity_insertion"`` (on the prompt's logit itself), patch by patch.

    Args:
        lm (LoadedModel): the model, with its tokenizer (:func:`load_model`
            of ``synthetic_clip``).
        images (Tensor): ``(B, C, H, W)`` normalised images.
        prompts (sequence of str): the prompts.
        methods (sequence of str): registry names.

    Returns:
        dict: ``maps`` (method -> ``(B P, C, H, W)``), ``logits`` ``(B, P)``,
        ``images`` ``(B P, C, H, W)``, ``targets`` ``(B P,)`` (prompt
        indices), ``scores`` (one dict per row: method -> score -> value).
    """
    from ..attr import text_similarity

    sim = text_similarity(lm.model, list(prompts), lm.tokenizer)
    P = len(prompts)
    with torch.no_grad():
        logits = sim(images)
    rows = images.repeat_interleave(P, 0)
    target = torch.arange(P).repeat(images.shape[0])
    # the similarity adapter stands in for the model (adapters.get takes an
    # adapter) but _explain_and_score's signature, as the methods', says nn.Module
    maps, scores = _explain_and_score(
        sim,  # type: ignore[arg-type]
        rows,
        target,
        methods=methods,
        metrics=("similarity_deletion", "similarity_insertion"),
    )
    return {
        "maps": maps,
        "logits": logits,
        "images": rows,
        "targets": target,
        "scores": scores,
    }


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
    model = lm.model
    with torch.no_grad():
        logits = model(images)
    pred = logits.argmax(-1)
    tgt = pred if target is None else torch.full_like(pred, int(target))
    names = ["deletion", "insertion"] + (["pointing_game"] if masks is not None else [])
    maps, scores = _explain_and_score(
        model, images, tgt, methods=methods, metrics=names, masks=masks
    )
    return {
        "maps": maps,
        "logits": logits,
        "predictions": pred,
        "targets": tgt,
        "scores": scores,
    }


def _explain_and_score(
    model: torch.nn.Module,
    inputs: Tensor,
    target: Tensor,
    *,
    methods: Sequence[str],
    metrics: Sequence[str],
    masks: Optional[Tensor] = None,
) -> Tuple[Dict[str, Tensor], List[Dict[str, Dict[str, float]]]]:
    """Explain ``inputs`` for ``target`` with each method (a registry name) and
    score every map with the registry's ``metrics``, patch by patch: the maps
    (method -> attribution) and one dict per input row (method -> column ->
    value)."""
    from ..attr import create_method
    from ..metrics import MetricContext, get_metric

    specs = [get_metric(n) for n in metrics]
    patch_size = model_patch_size(model, strict=False)
    maps: Dict[str, Tensor] = {}
    scores: List[Dict[str, Dict[str, float]]] = [{} for _ in range(len(inputs))]
    for name in methods:
        a = create_method(name, model).attribute(inputs, target=target).detach()
        maps[name] = a
        ctx = MetricContext(
            model, inputs, a, target=target, masks=masks, patch_size=patch_size
        )
        cols = {k: v for spec in specs for k, v in spec.compute(ctx).values.items()}
        for i in range(len(inputs)):
            scores[i][name] = {k: float(v[i]) for k, v in cols.items()}
    return maps, scores


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
