"""The scores the page computes for each method, with their curves.

The names are those of the metric registry (which also says which direction is
better); the page needs the whole curve, not only the AUC, so each score is a
call of the :mod:`captum_vit.metrics` function that draws it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from . import _core_api
from ._errors import InvalidArgument


class PageMetric(NamedTuple):
    """A score of the page: its registry name and the function drawing its
    curve, ``compute(forward, x, attr, target, n_steps, patch, mean, std)``."""

    name: str
    compute: Callable[..., Any]


class _Curve(NamedTuple):
    forward: Callable[..., Tensor]
    x: Tensor
    attr: Tensor
    target: int
    n_steps: int
    patch: Optional[int]
    mean: Any
    std: Any


def _deletion(c: _Curve) -> Any:
    from ..metrics import deletion_auc

    return deletion_auc(
        c.forward, c.x, c.attr, target=c.target, n_steps=c.n_steps, patch_size=c.patch
    )


def _insertion(c: _Curve) -> Any:
    from ..metrics import insertion_auc

    return insertion_auc(
        c.forward, c.x, c.attr, target=c.target, n_steps=c.n_steps, patch_size=c.patch
    )


def _perturbation(mode: str) -> Callable[[_Curve], Any]:
    def compute(c: _Curve) -> Any:
        from ..metrics import perturbation_test

        return perturbation_test(
            c.forward, c.x, c.attr, target=c.target, mode=mode, mean=c.mean, std=c.std
        )

    return compute


#: The scores the page computes, by their names in the metric registry.
PAGE_METRICS: Dict[str, PageMetric] = {
    m.name: m
    for m in (
        PageMetric("deletion", _deletion),
        PageMetric("insertion", _insertion),
        PageMetric("positive_perturbation", _perturbation("positive")),
        PageMetric("negative_perturbation", _perturbation("negative")),
    )
}

#: Names the page's scores had before they took the registry's names.
METRIC_ALIASES: Dict[str, str] = {
    "perturbation_positive": "positive_perturbation",
    "perturbation_negative": "negative_perturbation",
}


def metric_names(metrics: Any) -> List[str]:
    """Check a list of score names (:data:`PAGE_METRICS`, or the old
    ``perturbation_*`` names); None means all.

    Raises:
        InvalidArgument: not a non-empty list of known names.
    """
    if metrics is None:
        return list(PAGE_METRICS)
    if (
        isinstance(metrics, list)
        and metrics
        and all(
            isinstance(k, str) and METRIC_ALIASES.get(k, k) in PAGE_METRICS
            for k in metrics
        )
    ):
        return [METRIC_ALIASES.get(str(k), str(k)) for k in metrics]
    raise InvalidArgument(
        f"'metrics' must be a non-empty list drawn from {list(PAGE_METRICS)}"
    )


def metric_table(names: Sequence[str] = tuple(PAGE_METRICS)) -> List[Dict[str, str]]:
    """``name``, ``title`` and ``better`` (``"higher"`` / ``"lower"``) of scores."""
    return [
        {
            "name": k,
            "title": k.replace("_", " ") + " AUC",
            "better": _core_api.metric_direction(k),
        }
        for k in names
    ]


def score_row(
    model: torch.nn.Module,
    x: Tensor,
    attr: Tensor,
    target: int,
    names: Sequence[str],
    n_steps: int,
    mean: Any,
    std: Any,
    step: Callable[[str], None],
) -> Dict[str, Any]:
    """Every score of ``names`` for one map ``attr`` of ``x``: ``scores``
    {name: AUC} and ``curves`` {name: {``x``, ``y``}}; ``step(name)`` after
    each."""
    curve = _Curve(
        _core_api.forward_func(model),
        x,
        attr,
        target,
        n_steps,
        _core_api.patch_size(model, x),
        mean,
        std,
    )
    scores: Dict[str, float] = {}
    curves: Dict[str, Dict[str, List[float]]] = {}
    for key in names:
        with torch.no_grad():
            res = PAGE_METRICS[key].compute(curve)
        scores[key] = float(res.auc[0])
        curves[key] = {
            "x": [float(v) for v in res.fractions.cpu()],
            "y": [float(v) for v in res.curve[0].cpu()],
        }
        step(key)
    return {"scores": scores, "curves": curves}
