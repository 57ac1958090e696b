r"""The built-in metrics of the registry, in table order, each registered where it
is defined: a function of a :class:`~captum_vit.metrics.MetricContext` that calls
one metric of :mod:`captum_vit.metrics` (or :mod:`captum.metrics`) with the
settings of the benchmark table, which keyword ``options`` override."""

from __future__ import annotations

from typing import Any, Dict, Optional, TypeVar

import torch
from torch import Tensor

from .._targets import format_target
from ._registry import MetricContext, MetricOutput, register_metric
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


@register_metric(
    name="deletion",
    title="Deletion AUC",
    columns={"deletion_auc": False},
    needs=("forward",),
    description="deletion AUC (Petsiuk et al. 2018), patches removed most relevant "
    "first, softmax of the target; lower is better",
)
def _deletion(ctx: MetricContext, **options: Any) -> MetricOutput:
    kw: Dict[str, Any] = {"patch_size": ctx.patch_size, **options}
    res = deletion_auc(ctx.forward_func, ctx.inputs, ctx.attributions, ctx.target, **kw)
    return MetricOutput({"deletion_auc": res.auc}, res)


@register_metric(
    name="insertion",
    title="Insertion AUC",
    columns={"insertion_auc": True},
    needs=("forward",),
    description="insertion AUC (Petsiuk et al. 2018), patches inserted into a "
    "blurred image most relevant first; higher is better",
)
def _insertion(ctx: MetricContext, **options: Any) -> MetricOutput:
    kw: Dict[str, Any] = {"patch_size": ctx.patch_size, **options}
    res = insertion_auc(
        ctx.forward_func, ctx.inputs, ctx.attributions, ctx.target, **kw
    )
    return MetricOutput({"insertion_auc": res.auc}, res)


def _perturbation(
    ctx: MetricContext, mode: str, options: Dict[str, Any]
) -> MetricOutput:
    kw: Dict[str, Any] = {"mode": mode, "mean": ctx.mean, "std": ctx.std, **options}
    res = perturbation_test(
        ctx.forward_func, ctx.inputs, ctx.attributions, ctx.target, **kw
    )
    return MetricOutput({f"{mode[:3]}_perturbation_auc": res.auc}, res)


@register_metric(
    name="positive_perturbation",
    correct_only=True,
    title="Positive perturbation AUC",
    columns={"pos_perturbation_auc": False},
    needs=("forward",),
    description="positive perturbation test (Chefer et al. 2021a): top-1 accuracy "
    "AUC while blacking out the most relevant 10..90% pixels; lower is better",
)
def _positive_perturbation(ctx: MetricContext, **options: Any) -> MetricOutput:
    return _perturbation(ctx, "positive", options)


@register_metric(
    name="negative_perturbation",
    correct_only=True,
    title="Negative perturbation AUC",
    columns={"neg_perturbation_auc": True},
    needs=("forward",),
    description="negative perturbation test (Chefer et al. 2021a): the same, least "
    "relevant pixels first; higher is better",
)
def _negative_perturbation(ctx: MetricContext, **options: Any) -> MetricOutput:
    return _perturbation(ctx, "negative", options)


@register_metric(
    name="pointing_game",
    title="Pointing game",
    columns={"pointing_game": True},
    needs=("masks",),
    description="pointing game (Zhang et al. 2018): the maximum lies on the object "
    "mask (no tolerance); higher is better",
)
def _pointing_game(ctx: MetricContext, **options: Any) -> MetricOutput:
    hits = pointing_game(ctx.attributions, masks=_given(ctx.masks, "masks"), **options)
    return MetricOutput({"pointing_game": hits})


@register_metric(
    name="iou",
    title="IoU test",
    columns={"iou": True},
    needs=("masks",),
    description="IoU test: box of the map thresholded at 0.2 vs the object's box; "
    "higher is better",
)
def _iou(ctx: MetricContext, **options: Any) -> MetricOutput:
    return MetricOutput(
        {"iou": iou_test(ctx.attributions, masks=_given(ctx.masks, "masks"), **options)}
    )


@register_metric(
    name="segmentation",
    correct_only=True,
    title="Segmentation test",
    columns={"seg_pixel_acc": True, "seg_miou": True, "seg_ap": True, "seg_f1": True},
    needs=("masks",),
    description="segmentation test (Chefer et al. 2021a): map thresholded at its "
    "mean vs the mask, per-image pixel accuracy, mIoU, AP, F1; higher is better",
)
def _segmentation(ctx: MetricContext, **options: Any) -> MetricOutput:
    if options.get("correct_only"):
        options = {
            "forward_func": ctx.forward_func,
            "inputs": ctx.inputs,
            "target": _target(ctx),
            **options,
        }
    res = segmentation_test(ctx.attributions, _given(ctx.masks, "masks"), **options)
    return MetricOutput(
        {
            "seg_pixel_acc": res.pixel_accuracy,
            "seg_miou": res.miou,
            "seg_ap": res.ap,
            "seg_f1": res.f1,
        }
    )


@register_metric(
    name="complexity",
    title="Effective complexity",
    columns={"complexity": False},
    description="effective complexity (Nguyen & Martinez 2020) as the fraction of "
    "patches above 1e-5 of the maximum; lower is better",
)
def _complexity(ctx: MetricContext, **options: Any) -> MetricOutput:
    count = effective_complexity(
        ctx.attributions, **{"patch_size": ctx.patch_size, **options}
    )
    if ctx.patch_size:
        n_features = _n_patches(ctx)
    else:  # the positions of the map: pixels, or the tokens of a token grid
        n_features = ctx.attributions.shape[-2] * ctx.attributions.shape[-1]
    return MetricOutput({"complexity": count.double() / n_features})


@register_metric(
    name="faithfulness_correlation",
    seeded=True,
    title="Faithfulness correlation",
    columns={"faithfulness_corr": True},
    needs=("forward",),
    description="faithfulness correlation (Bhatt et al. 2020), 32 random 10% patch "
    "subsets; higher is better",
)
def _faithfulness_correlation(ctx: MetricContext, **options: Any) -> MetricOutput:
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


@register_metric(
    name="sensitivity_n",
    seeded=True,
    title="Sensitivity-n",
    columns={"sensitivity_n": True},
    needs=("forward",),
    description="sensitivity-n (Ancona et al. 2018), n = a quarter of the patches, "
    "32 subsets; higher is better",
)
def _sensitivity_n(ctx: MetricContext, **options: Any) -> MetricOutput:
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


@register_metric(
    name="infidelity",
    seeded=True,
    title="Infidelity",
    columns={"infidelity": False},
    needs=("forward",),
    description="infidelity (Yeh et al. 2019, captum.metrics) with patch noise "
    "(std 0.1), 8 draws, normalised; lower is better",
)
def _infidelity(ctx: MetricContext, **options: Any) -> MetricOutput:
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


@register_metric(
    name="sensitivity_max",
    seeded=True,
    title="Max-sensitivity",
    columns={"sensitivity_max": False},
    needs=("attribute",),
    description="max-sensitivity (Yeh et al. 2019, captum.metrics), patch-wise "
    "uniform noise of radius 0.05, 4 draws (re-runs the method); lower is better",
)
def _sensitivity_max(ctx: MetricContext, **options: Any) -> MetricOutput:
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


@register_metric(
    name="grid_pointing_game",
    title="Grid pointing game",
    columns={"grid_pointing": True},
    needs=("grid", "attribute"),
    description="grid pointing game (Boehle et al. 2021) on 2x2 synthetic grids: "
    "share of positive attribution in the target cell; higher is better",
)
def _grid_pointing_game(ctx: MetricContext, **options: Any) -> MetricOutput:
    images, targets, cells = _given(ctx.grid, "grid")
    attr = _given(ctx.attribute_func, "attribute_func")(images, target=targets)
    return MetricOutput({"grid_pointing": grid_pointing_game(attr, cells, **options)})


@register_metric(
    name="saco",
    title="SaCo",
    columns={"saco": True},
    needs=("forward",),
    description="salience-guided faithfulness coefficient (Wu et al. 2024), K = 10 "
    "pixel groups each replaced alone by the image mean; higher is better",
)
def _saco(ctx: MetricContext, **options: Any) -> MetricOutput:
    return MetricOutput(
        {
            "saco": saco(
                ctx.forward_func, ctx.inputs, ctx.attributions, ctx.target, **options
            ).coefficient
        }
    )


@register_metric(
    name="road",
    title="ROAD",
    columns={"road_morf": False, "road_lerf": True},
    needs=("forward",),
    seeded=True,
    description="ROAD (Rong et al. 2022): change of the target probability after "
    "noisy linear imputation of 10..90% of the pixels, most relevant first "
    "(lower is better) and least relevant first (higher is better)",
)
def _road(ctx: MetricContext, **options: Any) -> MetricOutput:
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


@register_metric(
    name="model_randomisation",
    title="Model randomisation",
    columns={"rand_spearman": False, "rand_ssim": False},
    needs=("model", "method"),
    seeded=True,
    description="cascading model randomisation (Adebayo et al. 2018): mean over the "
    "cascade (head, blocks last to first, embedding) of the Spearman correlation "
    "and SSIM between the maps on the trained and the re-initialised model; lower "
    "is better",
)
def _model_randomisation(ctx: MetricContext, **options: Any) -> MetricOutput:
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
