"""The metrics the benchmark runs: named wrappers around :mod:`captum_vit.metrics`
and :mod:`captum.metrics` that return one value per sample."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor


class MetricContext(NamedTuple):
    r"""Everything a benchmark metric may use for one batch.

    Attributes:
        model (torch.nn.Module): the model (takes normalised images).
        method (captum.attr.Attribution): the method that produced
            ``attributions`` (re-run by ``sensitivity_max`` and the grid game).
        inputs (Tensor): ``(B, C, H, W)`` normalised images.
        attributions (Tensor): the method's input-shaped attributions.
        target (Tensor): ``(B,)`` explained classes.
        masks (Tensor or None): ``(B, H, W)`` ground-truth masks.
        boxes (Tensor or None): ``(B, 4)`` ground-truth boxes.
        mean (tuple): normalisation mean of the inputs.
        std (tuple): normalisation std of the inputs.
        patch_size (int): the model's patch size.
        seed (int): seed of every random draw of the metric.
        grid (tuple or None): ``(images, labels, cells)`` of the 2x2 grids of
            the same samples (synthetic benchmark only).
    """

    model: torch.nn.Module
    method: Any
    inputs: Tensor
    attributions: Tensor
    target: Tensor
    masks: Optional[Tensor]
    boxes: Optional[Tensor]
    mean: tuple
    std: tuple
    patch_size: int
    seed: int
    grid: Optional[Tuple[Tensor, Tensor, Tensor]]


class MetricSpec(NamedTuple):
    r"""A benchmark metric.

    Attributes:
        name (str): the name ``--metrics`` takes.
        columns (dict[str, bool]): the table columns it fills, each with
            ``True`` when higher is better.
        needs (tuple[str, ...]): ground truth it needs: ``"mask"`` (masks and
            boxes) and/or ``"grid"`` (the synthetic 2x2 grids).
        fn (Callable): ``fn(ctx: MetricContext) -> dict[column, Tensor (B,)]``.
        description (str): one line for the docs and ``--help``.
    """

    name: str
    columns: Dict[str, bool]
    needs: Tuple[str, ...]
    fn: Callable[[MetricContext], Dict[str, Tensor]]
    description: str


_METRICS: Dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    r"""Add a metric to the benchmark (replacing one of the same name).

    Args:
        spec (MetricSpec): the metric.

    Returns:
        MetricSpec: ``spec``.
    """
    _METRICS[spec.name] = spec
    return spec


def list_metrics() -> List[str]:
    r"""Names of the benchmark metrics, in table order.

    Returns:
        list[str]: names accepted by ``metrics=`` / ``--metrics``.

    Examples::

        >>> "deletion" in list_metrics()
        True
    """
    return list(_METRICS)


def get_metric(name: str) -> MetricSpec:
    r"""The :class:`MetricSpec` registered as ``name``.

    Args:
        name (str): one of :func:`list_metrics`.

    Returns:
        MetricSpec: the metric.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    try:
        return _METRICS[name]
    except KeyError:
        raise ValueError(
            f"unknown metric {name!r}; available: {', '.join(_METRICS)}"
        ) from None


def _deletion(ctx: MetricContext) -> Dict[str, Tensor]:
    from ..metrics import deletion_auc

    res = deletion_auc(
        ctx.model, ctx.inputs, ctx.attributions, ctx.target, patch_size=ctx.patch_size
    )
    return {"deletion_auc": res.auc}


def _insertion(ctx: MetricContext) -> Dict[str, Tensor]:
    from ..metrics import insertion_auc

    res = insertion_auc(
        ctx.model, ctx.inputs, ctx.attributions, ctx.target, patch_size=ctx.patch_size
    )
    return {"insertion_auc": res.auc}


def _perturbation(mode: str) -> Callable[[MetricContext], Dict[str, Tensor]]:
    def fn(ctx: MetricContext) -> Dict[str, Tensor]:
        from ..metrics import perturbation_test

        res = perturbation_test(
            ctx.model,
            ctx.inputs,
            ctx.attributions,
            ctx.target,
            mode=mode,
            mean=ctx.mean,
            std=ctx.std,
        )
        return {f"{mode[:3]}_perturbation_auc": res.auc}

    return fn


def _pointing(ctx: MetricContext) -> Dict[str, Tensor]:
    from ..metrics import pointing_game

    return {"pointing_game": pointing_game(ctx.attributions, masks=ctx.masks)}


def _iou(ctx: MetricContext) -> Dict[str, Tensor]:
    from ..metrics import iou_test

    return {"iou": iou_test(ctx.attributions, masks=ctx.masks)}


def _segmentation(ctx: MetricContext) -> Dict[str, Tensor]:
    from ..metrics import segmentation_test

    res = segmentation_test(ctx.attributions, ctx.masks)
    return {
        "seg_pixel_acc": res.pixel_accuracy,
        "seg_miou": res.miou,
        "seg_ap": res.ap,
        "seg_f1": res.f1,
    }


def _complexity(ctx: MetricContext) -> Dict[str, Tensor]:
    from ..metrics import effective_complexity

    count = effective_complexity(ctx.attributions, patch_size=ctx.patch_size)
    H, W = ctx.inputs.shape[-2:]
    n_patches = (H // ctx.patch_size) * (W // ctx.patch_size)
    return {"complexity": count.double() / n_patches}


def _faithfulness(ctx: MetricContext) -> Dict[str, Tensor]:
    from ..metrics import faithfulness_correlation

    corr = faithfulness_correlation(
        ctx.model,
        ctx.inputs,
        ctx.attributions,
        ctx.target,
        n_runs=32,
        patch_size=ctx.patch_size,
        seed=ctx.seed,
    )
    return {"faithfulness_corr": corr}


def _sensitivity_n(ctx: MetricContext) -> Dict[str, Tensor]:
    from ..metrics import sensitivity_n

    H, W = ctx.inputs.shape[-2:]
    n_patches = (H // ctx.patch_size) * (W // ctx.patch_size)
    corr = sensitivity_n(
        ctx.model,
        ctx.inputs,
        ctx.attributions,
        n=max(1, n_patches // 4),
        target=ctx.target,
        n_subsets=32,
        patch_size=ctx.patch_size,
        seed=ctx.seed,
    )
    return {"sensitivity_n": corr}


def _infidelity(ctx: MetricContext) -> Dict[str, Tensor]:
    from captum.metrics import infidelity

    from ..metrics import patch_noise_perturb_func

    perturb = patch_noise_perturb_func(ctx.patch_size, std=0.1, seed=ctx.seed)
    value = infidelity(
        ctx.model,
        perturb,
        ctx.inputs,
        ctx.attributions,
        target=ctx.target,
        n_perturb_samples=8,
        normalize=True,
    )
    return {"infidelity": value}


def _sensitivity_max(ctx: MetricContext) -> Dict[str, Tensor]:
    from captum.metrics import sensitivity_max

    from ..metrics import patch_noise_perturb_func

    perturb = patch_noise_perturb_func(
        ctx.patch_size, metric="sensitivity", seed=ctx.seed
    )
    value = sensitivity_max(
        ctx.method.attribute,
        ctx.inputs,
        perturb_func=perturb,
        perturb_radius=0.05,
        n_perturb_samples=4,
        target=ctx.target,
    )
    return {"sensitivity_max": value}


def _grid_pointing(ctx: MetricContext) -> Dict[str, Tensor]:
    from ..metrics import grid_pointing_game

    images, labels, cells = ctx.grid
    attr = ctx.method.attribute(images, target=labels)
    return {"grid_pointing": grid_pointing_game(attr, cells)}


for _spec in (
    MetricSpec(
        "deletion",
        {"deletion_auc": False},
        (),
        _deletion,
        "deletion AUC (Petsiuk et al. 2018), patches removed most relevant first, "
        "softmax of the target; lower is better",
    ),
    MetricSpec(
        "insertion",
        {"insertion_auc": True},
        (),
        _insertion,
        "insertion AUC (Petsiuk et al. 2018), patches inserted into a blurred "
        "image most relevant first; higher is better",
    ),
    MetricSpec(
        "positive_perturbation",
        {"pos_perturbation_auc": False},
        (),
        _perturbation("positive"),
        "positive perturbation test (Chefer et al. 2021a): top-1 accuracy AUC "
        "while blacking out the most relevant 10..90% pixels; lower is better",
    ),
    MetricSpec(
        "negative_perturbation",
        {"neg_perturbation_auc": True},
        (),
        _perturbation("negative"),
        "negative perturbation test (Chefer et al. 2021a): the same, least "
        "relevant pixels first; higher is better",
    ),
    MetricSpec(
        "pointing_game",
        {"pointing_game": True},
        ("mask",),
        _pointing,
        "pointing game (Zhang et al. 2018): the maximum lies on the object mask "
        "(no tolerance); higher is better",
    ),
    MetricSpec(
        "iou",
        {"iou": True},
        ("mask",),
        _iou,
        "IoU test: box of the map thresholded at 0.2 vs the object's box; "
        "higher is better",
    ),
    MetricSpec(
        "segmentation",
        {"seg_pixel_acc": True, "seg_miou": True, "seg_ap": True, "seg_f1": True},
        ("mask",),
        _segmentation,
        "segmentation test (Chefer et al. 2021a): map thresholded at its mean vs "
        "the mask, per-image pixel accuracy, mIoU, AP, F1; higher is better",
    ),
    MetricSpec(
        "complexity",
        {"complexity": False},
        (),
        _complexity,
        "effective complexity (Nguyen & Martinez 2020) as the fraction of patches "
        "above 1e-5 of the maximum; lower is better",
    ),
    MetricSpec(
        "faithfulness_correlation",
        {"faithfulness_corr": True},
        (),
        _faithfulness,
        "faithfulness correlation (Bhatt et al. 2020), 32 random 10% patch "
        "subsets; higher is better",
    ),
    MetricSpec(
        "sensitivity_n",
        {"sensitivity_n": True},
        (),
        _sensitivity_n,
        "sensitivity-n (Ancona et al. 2018), n = a quarter of the patches, 32 "
        "subsets; higher is better",
    ),
    MetricSpec(
        "infidelity",
        {"infidelity": False},
        (),
        _infidelity,
        "infidelity (Yeh et al. 2019, captum.metrics) with patch noise (std 0.1), "
        "8 draws, normalised; lower is better",
    ),
    MetricSpec(
        "sensitivity_max",
        {"sensitivity_max": False},
        (),
        _sensitivity_max,
        "max-sensitivity (Yeh et al. 2019, captum.metrics), patch-wise uniform "
        "noise of radius 0.05, 4 draws (re-runs the method); lower is better",
    ),
    MetricSpec(
        "grid_pointing_game",
        {"grid_pointing": True},
        ("grid",),
        _grid_pointing,
        "grid pointing game (Boehle et al. 2021) on 2x2 synthetic grids: share of "
        "positive attribution in the target cell; higher is better",
    ),
):
    register_metric(_spec)
