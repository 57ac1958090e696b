r"""The built-in metrics of the registry, in table order, each registered where it
is defined: a function of a :class:`~captum_vit.metrics.MetricContext` that calls
one metric of :mod:`captum_vit.metrics` (or :mod:`captum.metrics`) with the
settings of the benchmark table, which keyword ``options`` override.

Each is declared in one line, ``@_metric(name, columns, *needs)`` (columns map
to True where higher is better); the first line of its docstring is the title,
the rest the description (under ``python -OO``, which drops docstrings, the
title falls back to the name and the description is empty).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, TypeVar

import torch
from torch import Tensor

from .._targets import format_target
from ._registry import MetricContext, MetricFn, MetricOutput, register_metric
from ._results import CurveResult
from ._road import road
from ._saco import saco
from ._utils import _forward
from .complexity import effective_complexity
from .faithfulness import (
    deletion_auc,
    faithfulness_correlation,
    insertion_auc,
    perturbation_test,
    sensitivity_n,
)
from .localisation import grid_pointing_game, iou_test, pointing_game
from .perturbations import patch_noise_perturb_func
from .randomisation import model_randomisation
from .segmentation import segmentation_test

T = TypeVar("T")


def _metric(
    name: str,
    columns: Dict[str, bool],
    *needs: str,
    seeded: bool = False,
    correct_only: bool = False,
) -> Callable[[MetricFn], MetricFn]:
    """Register the decorated function as the metric ``name`` (the fields of
    :class:`~captum_vit.metrics.MetricSpec`): the first line of its docstring is
    the title, the rest, on one line, the description."""

    def decorator(fn: MetricFn) -> MetricFn:
        title, _, description = (fn.__doc__ or "").partition("\n\n")  # None: -OO
        return register_metric(
            name=name,
            title=title.strip(),
            columns=columns,
            needs=needs,
            description=" ".join(description.split()),
            seeded=seeded,
            correct_only=correct_only,
        )(fn)

    return decorator


def _given(value: Optional[T], field: str) -> T:
    """A context field the metric needs (:meth:`MetricSpec.compute` checks first)."""
    if value is None:
        raise ValueError(f"MetricContext.{field} is needed")
    return value


def _n_patches(ctx: MetricContext) -> int:
    """Features the perturbation metrics use: patches, or pixels."""
    H, W = ctx.inputs.shape[-2:]
    p = ctx.patch_size
    return (H // p) * (W // p) if p else H * W


def _target(ctx: MetricContext) -> Tensor:
    """``(B,)`` explained classes: the context's, or the predicted ones."""
    B, device = ctx.inputs.shape[0], ctx.inputs.device
    target = format_target(ctx.target, B, device=device)
    if target is None:
        with torch.no_grad():
            target = _forward(ctx.forward_func, ctx.inputs, ()).argmax(dim=-1)
    return target


def _curve(
    metric: Callable[..., CurveResult],
    ctx: MetricContext,
    options: Dict[str, Any],
    *,
    column: str,
    **settings: Any,
) -> MetricOutput:
    """A curve metric on the context's batch with the registered ``settings``,
    which ``options`` override; its AUC is the value of ``column``."""
    kw = {**settings, **options}
    res = metric(ctx.forward_func, ctx.inputs, ctx.attributions, ctx.target, **kw)
    return MetricOutput({column: res.auc}, res)


@_metric("deletion", {"deletion_auc": False}, "forward")
def _deletion(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Deletion AUC

    deletion AUC (Petsiuk et al. 2018), patches removed most relevant first,
    softmax of the target; lower is better"""
    return _curve(
        deletion_auc, ctx, options, column="deletion_auc", patch_size=ctx.patch_size
    )


@_metric("insertion", {"insertion_auc": True}, "forward")
def _insertion(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Insertion AUC

    insertion AUC (Petsiuk et al. 2018), patches inserted into a blurred image
    most relevant first; higher is better"""
    return _curve(
        insertion_auc, ctx, options, column="insertion_auc", patch_size=ctx.patch_size
    )


_POSITIVE, _NEGATIVE = {"pos_perturbation_auc": False}, {"neg_perturbation_auc": True}


def _perturbation(
    ctx: MetricContext, mode: str, options: Dict[str, Any]
) -> MetricOutput:
    column, mean, std = f"{mode[:3]}_perturbation_auc", ctx.mean, ctx.std
    return _curve(
        perturbation_test, ctx, options, column=column, mode=mode, mean=mean, std=std
    )


@_metric("positive_perturbation", _POSITIVE, "forward", correct_only=True)
def _positive_perturbation(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Positive perturbation AUC

    positive perturbation test (Chefer et al. 2021a): top-1 accuracy AUC while
    blacking out the most relevant 10..90% pixels; lower is better"""
    return _perturbation(ctx, "positive", options)


@_metric("negative_perturbation", _NEGATIVE, "forward", correct_only=True)
def _negative_perturbation(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Negative perturbation AUC

    negative perturbation test (Chefer et al. 2021a): the same, least relevant
    pixels first; higher is better"""
    return _perturbation(ctx, "negative", options)


@_metric("pointing_game", {"pointing_game": True}, "masks")
def _pointing_game(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Pointing game

    pointing game (Zhang et al. 2018): the maximum lies on the object mask (no
    tolerance); higher is better"""
    hits = pointing_game(ctx.attributions, masks=_given(ctx.masks, "masks"), **options)
    return MetricOutput({"pointing_game": hits})


@_metric("iou", {"iou": True}, "masks")
def _iou(ctx: MetricContext, **options: Any) -> MetricOutput:
    """IoU test

    IoU test: box of the map thresholded at 0.2 vs the object's box; higher is
    better"""
    iou = iou_test(ctx.attributions, masks=_given(ctx.masks, "masks"), **options)
    return MetricOutput({"iou": iou})


_SEGMENTATION = {
    "seg_pixel_acc": True,
    "seg_miou": True,
    "seg_ap": True,
    "seg_f1": True,
}


@_metric("segmentation", _SEGMENTATION, "masks", correct_only=True)
def _segmentation(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Segmentation test

    segmentation test (Chefer et al. 2021a): map thresholded at its mean vs the
    mask, per-image pixel accuracy, mIoU, AP, F1; higher is better"""
    if options.get("correct_only"):
        options = {
            "forward_func": ctx.forward_func,
            "inputs": ctx.inputs,
            "target": _target(ctx),
            **options,
        }
    res = segmentation_test(ctx.attributions, _given(ctx.masks, "masks"), **options)
    values = (res.pixel_accuracy, res.miou, res.ap, res.f1)
    return MetricOutput(dict(zip(_SEGMENTATION, values)))


@_metric("complexity", {"complexity": False})
def _complexity(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Effective complexity

    effective complexity (Nguyen & Martinez 2020) as the fraction of patches
    above 1e-5 of the maximum; lower is better"""
    count = effective_complexity(
        ctx.attributions, **{"patch_size": ctx.patch_size, **options}
    )
    if ctx.patch_size:
        n_features = _n_patches(ctx)
    else:  # the positions of the map: pixels, or the tokens of a token grid
        n_features = ctx.attributions.shape[-2] * ctx.attributions.shape[-1]
    return MetricOutput({"complexity": count.double() / n_features})


@_metric(
    "faithfulness_correlation", {"faithfulness_corr": True}, "forward", seeded=True
)
def _faithfulness_correlation(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Faithfulness correlation

    faithfulness correlation (Bhatt et al. 2020), 32 random 10% patch subsets;
    higher is better"""
    kw: Dict[str, Any] = {
        "n_runs": 32,
        "patch_size": ctx.patch_size,
        "seed": ctx.seed,
        **options,
    }
    corr = faithfulness_correlation(
        ctx.forward_func, ctx.inputs, ctx.attributions, ctx.target, **kw
    )
    return MetricOutput({"faithfulness_corr": corr})


@_metric("sensitivity_n", {"sensitivity_n": True}, "forward", seeded=True)
def _sensitivity_n(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Sensitivity-n

    sensitivity-n (Ancona et al. 2018), n = a quarter of the patches, 32
    subsets; higher is better"""
    kw: Dict[str, Any] = {
        "n": max(1, _n_patches(ctx) // 4),
        "target": ctx.target,
        "n_subsets": 32,
        "patch_size": ctx.patch_size,
        "seed": ctx.seed,
        **options,
    }
    corr = sensitivity_n(ctx.forward_func, ctx.inputs, ctx.attributions, **kw)
    return MetricOutput({"sensitivity_n": corr})


@_metric("infidelity", {"infidelity": False}, "forward", seeded=True)
def _infidelity(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Infidelity

    infidelity (Yeh et al. 2019, captum.metrics) with patch noise (std 0.1), 8
    draws, normalised; lower is better"""
    from captum.metrics import infidelity

    perturb = patch_noise_perturb_func(ctx.patch_size or 1, std=0.1, seed=ctx.seed)
    kw: Dict[str, Any] = {"n_perturb_samples": 8, "normalize": True, **options}
    value = infidelity(
        ctx.forward_func,
        perturb,
        ctx.inputs,
        ctx.attributions,
        target=_target(ctx),
        **kw,
    )
    return MetricOutput({"infidelity": value})


@_metric("sensitivity_max", {"sensitivity_max": False}, "attribute", seeded=True)
def _sensitivity_max(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Max-sensitivity

    max-sensitivity (Yeh et al. 2019, captum.metrics), patch-wise uniform noise
    of radius 0.05, 4 draws (re-runs the method); lower is better"""
    from captum.metrics import sensitivity_max

    perturb = patch_noise_perturb_func(
        ctx.patch_size or 1, metric="sensitivity", seed=ctx.seed
    )
    kw: Dict[str, Any] = {"perturb_radius": 0.05, "n_perturb_samples": 4, **options}
    value = sensitivity_max(
        _given(ctx.attribute_func, "attribute_func"),
        ctx.inputs,
        perturb_func=perturb,
        target=_target(ctx),
        **kw,
    )
    return MetricOutput({"sensitivity_max": value})


@_metric("grid_pointing_game", {"grid_pointing": True}, "grid", "attribute")
def _grid_pointing_game(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Grid pointing game

    grid pointing game (Boehle et al. 2021) on 2x2 synthetic grids: share of
    positive attribution in the target cell; higher is better"""
    images, targets, cells = _given(ctx.grid, "grid")
    attr = _given(ctx.attribute_func, "attribute_func")(images, target=targets)
    return MetricOutput({"grid_pointing": grid_pointing_game(attr, cells, **options)})


@_metric("saco", {"saco": True}, "forward")
def _saco(ctx: MetricContext, **options: Any) -> MetricOutput:
    """SaCo

    salience-guided faithfulness coefficient (Wu et al. 2024), K = 10 pixel
    groups each replaced alone by the image mean; higher is better"""
    res = saco(ctx.forward_func, ctx.inputs, ctx.attributions, ctx.target, **options)
    return MetricOutput({"saco": res.coefficient})


_ROAD = {"road_morf": False, "road_lerf": True}


@_metric("road", _ROAD, "forward", seeded=True)
def _road(ctx: MetricContext, **options: Any) -> MetricOutput:
    """ROAD

    ROAD (Rong et al. 2022): change of the target probability after noisy
    linear imputation of 10..90% of the pixels, most relevant first (lower is
    better) and least relevant first (higher is better)"""
    gen = torch.Generator().manual_seed(int(ctx.seed or 0))
    kw: Dict[str, Any] = {"generator": gen, **options}
    # LeRF first on the shared generator: (lerf - morf) / 2 is grad-cam's ROADCombined
    lerf = road(
        ctx.forward_func, ctx.inputs, ctx.attributions, ctx.target, order="lerf", **kw
    )
    morf = road(
        ctx.forward_func, ctx.inputs, ctx.attributions, ctx.target, order="morf", **kw
    )
    return MetricOutput({"road_morf": morf.change, "road_lerf": lerf.change})


_RANDOMISATION = {"rand_spearman": False, "rand_ssim": False}


@_metric("model_randomisation", _RANDOMISATION, "model", "method", seeded=True)
def _model_randomisation(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Model randomisation

    cascading model randomisation (Adebayo et al. 2018): mean over the cascade
    (head, blocks last to first, embedding) of the Spearman correlation and SSIM
    between the maps on the trained and the re-initialised model; lower is better"""
    kw: Dict[str, Any] = {"seed": int(ctx.seed or 0), **options}
    res = model_randomisation(
        _given(ctx.model, "model"),
        _given(ctx.method_factory, "method_factory"),
        ctx.inputs,
        _target(ctx),  # the trained model's class on every copy
        attributions=ctx.attributions,
        **kw,
    )
    return MetricOutput(
        {"rand_spearman": res.spearman.mean(dim=1), "rand_ssim": res.ssim.mean(dim=1)}
    )
