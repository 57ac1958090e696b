"""Evaluation criteria of the Vision-Transformer explainability literature.

Functions over tensors that take a forward function, inputs, attributions from any
Captum or captum_vit method (input-shaped, one-channel, ``(B, H, W)`` or a token grid)
and targets. Metrics never import :mod:`captum_vit.attr`.

Faithfulness: :func:`deletion_auc`, :func:`insertion_auc`, :func:`perturbation_test`,
:func:`faithfulness_correlation`, :func:`sensitivity_n`, :func:`saco`, :func:`road`,
and patch-level perturbation functions for :func:`captum.metrics.infidelity` /
:func:`captum.metrics.sensitivity_max` (:func:`patch_noise_perturb_func`,
:func:`patch_baseline_perturb_func`). Sanity: :func:`model_randomisation` (with
:func:`cascade_layers`, :func:`randomised_copy`, :func:`spearman`, :func:`ssim`).
Complexity: :func:`effective_complexity`.
Localisation: :func:`iou_test`, :func:`pointing_game`, :func:`grid_pointing_game`
(with :func:`make_grid_images`), :func:`segmentation_test`.
Open-vocabulary localisation (one prompt per object of a multi-object image):
:func:`object_pairs`, :func:`threshold_iou` (:mod:`captum_vit.metrics.open_vocab`).

The registry (:func:`list_metrics`, :func:`get_metric`, :func:`register_metric`) names
these metrics with their result columns, which direction of each is better and what
they need; the benchmark, the command line and the web visualiser compute them
through it (:meth:`MetricSpec.compute` on a :class:`MetricContext`).
"""

from . import (
    _specs,  # noqa: F401  (registers the built-in metrics, in table order)
    open_vocab,  # noqa: F401  (issue 14: registers the open-vocabulary ones)
)
from ._registry import (
    NEEDS,
    MetricContext,
    MetricOutput,
    MetricSpec,
    get_metric,
    list_metrics,
    register_metric,
)
from ._results import CurveResult
from ._road import ROADResult, road
from ._saco import SaCoResult, saco
from .complexity import effective_complexity
from .faithfulness import (
    deletion_auc,
    faithfulness_correlation,
    insertion_auc,
    perturbation_test,
    sensitivity_n,
)
from .localisation import (
    GridImages,
    grid_pointing_game,
    iou_test,
    make_grid_images,
    pointing_game,
)
from .open_vocab import ObjectPairs, object_pairs, threshold_iou
from .perturbations import patch_baseline_perturb_func, patch_noise_perturb_func
from .randomisation import (
    RandomisationResult,
    cascade_layers,
    model_randomisation,
    randomised_copy,
    spearman,
    ssim,
)
from .segmentation import SegmentationResult, segmentation_test, summarize_segmentation

__all__ = [
    "NEEDS",
    "MetricContext",
    "MetricOutput",
    "MetricSpec",
    "get_metric",
    "list_metrics",
    "register_metric",
    "CurveResult",
    "GridImages",
    "ROADResult",
    "RandomisationResult",
    "SaCoResult",
    "SegmentationResult",
    "cascade_layers",
    "deletion_auc",
    "effective_complexity",
    "faithfulness_correlation",
    "grid_pointing_game",
    "insertion_auc",
    "iou_test",
    "make_grid_images",
    "model_randomisation",
    "patch_baseline_perturb_func",
    "patch_noise_perturb_func",
    "perturbation_test",
    "pointing_game",
    "randomised_copy",
    "road",
    "saco",
    "segmentation_test",
    "sensitivity_n",
    "spearman",
    "ssim",
    "summarize_segmentation",
    "ObjectPairs",
    "object_pairs",
    "threshold_iou",
]
