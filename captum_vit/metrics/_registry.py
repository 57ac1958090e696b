r"""The metric registry: one table of the metrics, their result columns and which
direction of each is better, shared by the benchmark, the command line, the web
visualiser and the documentation.

A registered metric is a :class:`MetricSpec`; its function takes a
:class:`MetricContext` (everything a metric may use for one batch) and keyword
options that override the registered settings, and returns a :class:`MetricOutput`
(one value per sample for each column, and the curve where the metric has one).
The built-in metrics are registered in table order where they are defined
(``captum_vit/metrics/_specs.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union, overload

from torch import Tensor, nn

from .._targets import TargetType
from ._results import CurveResult

#: What a metric may need, and the :class:`MetricContext` field that provides it:
#: ``"forward"`` re-runs the model on perturbed inputs, ``"attribute"`` re-runs the
#: explanation method, ``"masks"`` / ``"boxes"`` are the ground truth,
#: ``"grid"`` the 2x2 grids of the synthetic benchmark, ``"model"`` the model as
#: an ``nn.Module`` and ``"method"`` a factory that builds the method on another
#: model (the model-randomisation check).
NEEDS: Dict[str, str] = {
    "forward": "forward_func",
    "attribute": "attribute_func",
    "masks": "masks",
    "boxes": "boxes",
    "grid": "grid",
    "model": "model",
    "method": "method_factory",
}


class MetricContext(NamedTuple):
    r"""Everything a registered metric may use for one batch.

    Build it with keywords; only ``forward_func``, ``inputs`` and ``attributions``
    are required.

    Attributes:
        forward_func (Callable): the model (or any function) mapping ``(N, C, H,
            W)`` inputs to ``(N, classes)`` outputs, e.g.
            :func:`captum_vit.forward_func`.
        inputs (Tensor): ``(B, C, H, W)`` images in the model's input space.
        attributions (Tensor): the attributions of ``inputs``, any layout the
            metrics take (``(B, C, H, W)``, ``(B, H, W)`` or a token grid).
        target (int, tuple, Tensor, list or numpy array, optional): the explained
            class per sample (Captum's forms); ``None`` uses the predicted class.
            Default: None
        attribute_func (Callable, optional): re-runs the explanation method,
            ``attribute_func(inputs, target=...)`` (e.g. ``method.attribute``); for
            the metrics that need ``"attribute"``. Default: None
        masks (Tensor, optional): ``(B, H, W)`` ground-truth masks. Default: None
        boxes (Tensor, optional): ``(B, 4)`` ground-truth boxes ``(x_min, y_min,
            x_max, y_max)``, max exclusive. Default: None
        mean (sequence of float, optional): normalisation mean of the inputs
            (black in the perturbation tests). Default: None (un-normalised)
        std (sequence of float, optional): normalisation std. Default: None
        patch_size (int, optional): the model's (square) patch size: metrics
            perturb and count whole patches; None works on pixels. Default: None
        seed (int, optional): seed of every random draw of the metric.
            Default: 0
        grid (tuple of Tensor, optional): ``(images, targets, target_cell)`` of
            the grid pointing game (:func:`make_grid_images` or the synthetic
            benchmark's grids). Default: None
        model (nn.Module, optional): the model itself, for the metrics that copy
            it (the model-randomisation check); never changed. Default: None
        method_factory (Callable, optional): ``method_factory(model)`` returns
            the explanation method's attribute function on another model
            (``lambda m: cv.GenericAttention(m).attribute``). Default: None
    """

    forward_func: Callable[..., Any]
    inputs: Tensor
    attributions: Tensor
    target: TargetType = None
    attribute_func: Optional[Callable[..., Tensor]] = None
    masks: Optional[Tensor] = None
    boxes: Optional[Tensor] = None
    mean: Optional[Sequence[float]] = None
    std: Optional[Sequence[float]] = None
    patch_size: Optional[int] = None
    seed: Optional[int] = 0
    grid: Optional[Tuple[Tensor, Tensor, Tensor]] = None
    model: Optional[nn.Module] = None
    method_factory: Optional[Callable[[nn.Module], Callable[..., Tensor]]] = None


class MetricOutput(NamedTuple):
    r"""What a registered metric returns for one batch.

    Attributes:
        values (dict[str, Tensor]): ``(B,)`` per-sample values of each of the
            metric's columns.
        curve (CurveResult or None): the perturbation curve behind the values,
            for the curve metrics (deletion, insertion, perturbation tests).
    """

    values: Dict[str, Tensor]
    curve: Optional[CurveResult] = None


MetricFn = Callable[..., Union[MetricOutput, Mapping[str, Tensor]]]


class MetricSpec(NamedTuple):
    r"""A registered metric.

    Attributes:
        name (str): the name :func:`get_metric`, ``--metrics`` and the web
            visualiser take.
        columns (dict[str, bool]): the result columns it fills, each with
            ``True`` when higher is better.
        needs (tuple[str, ...]): what it needs beyond inputs and attributions,
            drawn from :data:`NEEDS`: ``"forward"``, ``"attribute"``,
            ``"masks"``, ``"boxes"``, ``"grid"``.
        fn (Callable): ``fn(ctx: MetricContext, **options) -> MetricOutput``
            (or a dict of columns); ``options`` override the registered
            settings (the keyword arguments of the metric function it calls).
        description (str): one line for the docs and ``--help``.
        title (str): a short title for tables and plots (e.g. "Deletion AUC").
        seeded (bool): its values depend on :attr:`MetricContext.seed` (random
            draws): the benchmark recomputes it for every repeat seed.
        correct_only (bool): its function takes ``correct_only=True`` (the
            values of misclassified images become NaN); the benchmark reports
            its columns over the correctly classified images beside the default.
    """

    name: str
    columns: Dict[str, bool]
    needs: Tuple[str, ...]
    fn: MetricFn
    description: str
    title: str = ""
    seeded: bool = False
    correct_only: bool = False

    def better(self, column: Optional[str] = None) -> str:
        r"""``"higher"`` or ``"lower"``: which direction of ``column`` is better.

        Args:
            column (str, optional): one of :attr:`columns`; may be left out for a
                one-column metric. Default: None

        Returns:
            str
        """
        if column is None:
            if len(self.columns) != 1:
                raise ValueError(
                    f"metric {self.name!r} has columns {list(self.columns)}; name one"
                )
            (column,) = self.columns
        if column not in self.columns:
            raise ValueError(
                f"metric {self.name!r} has no column {column!r}; it has "
                f"{list(self.columns)}"
            )
        return "higher" if self.columns[column] else "lower"

    def compute(self, ctx: MetricContext, **options: Any) -> MetricOutput:
        r"""Compute the metric on one batch.

        Args:
            ctx (MetricContext): the batch.
            **options (Any): keyword arguments for the metric function, replacing
                the registered settings (e.g. ``n_steps=16`` for ``"deletion"``).

        Returns:
            MetricOutput: ``values`` (one ``(B,)`` tensor per column) and, for a
            curve metric, ``curve``.

        Raises:
            ValueError: the context lacks something the metric needs.
        """
        for need in self.needs:
            field = NEEDS[need]
            if getattr(ctx, field) is None:
                raise ValueError(
                    f"metric {self.name!r} needs {need}: give MetricContext.{field}"
                )
        out = self.fn(ctx, **options)
        if not isinstance(out, MetricOutput):
            out = MetricOutput(dict(out))
        if set(out.values) != set(self.columns):
            raise ValueError(
                f"metric {self.name!r} returned columns {sorted(out.values)}, "
                f"registered {sorted(self.columns)}"
            )
        return out


_METRICS: Dict[str, MetricSpec] = {}


def _check_spec(spec: MetricSpec) -> MetricSpec:
    if not isinstance(spec.name, str) or not spec.name:
        raise ValueError(f"a metric name must be a non-empty str, got {spec.name!r}")
    if not spec.columns or not all(
        isinstance(c, str) and isinstance(h, bool) for c, h in spec.columns.items()
    ):
        raise ValueError(
            f"metric {spec.name!r}: columns must map column names to bools "
            "(True = higher is better)"
        )
    unknown = [n for n in spec.needs if n not in NEEDS]
    if unknown:
        raise ValueError(
            f"metric {spec.name!r}: unknown needs {unknown}; expected some of "
            f"{list(NEEDS)}"
        )
    if not callable(spec.fn):
        raise TypeError(f"metric {spec.name!r}: fn must be callable")
    title = spec.title or spec.name.replace("_", " ").capitalize()
    return spec._replace(
        columns=dict(spec.columns), needs=tuple(spec.needs), title=title
    )


@overload
def register_metric(spec: MetricSpec) -> MetricSpec: ...


@overload
def register_metric(
    spec: None = None,
    *,
    name: str,
    columns: Mapping[str, bool],
    needs: Sequence[str] = (),
    description: str = "",
    title: str = "",
    seeded: bool = False,
    correct_only: bool = False,
) -> Callable[[MetricFn], MetricFn]: ...


def register_metric(
    spec: Optional[MetricSpec] = None,
    *,
    name: Optional[str] = None,
    columns: Optional[Mapping[str, bool]] = None,
    needs: Sequence[str] = (),
    description: str = "",
    title: str = "",
    seeded: bool = False,
    correct_only: bool = False,
) -> Union[MetricSpec, Callable[[MetricFn], MetricFn]]:
    r"""Register a metric (replacing one of the same name, in its place).

    Either pass a :class:`MetricSpec`, or use it as a decorator on the metric's
    function with the spec's fields as keywords (as timm's ``@register_model``).

    Args:
        spec (MetricSpec, optional): the metric. Default: None
        name (str): with the decorator: the metric's name.
        columns (dict[str, bool]): with the decorator: column -> higher is
            better.
        needs (sequence of str, optional): with the decorator: see
            :data:`NEEDS`. Default: ()
        description (str, optional): with the decorator: one line. Default: ""
        title (str, optional): with the decorator: a short title; empty: made
            from the name. Default: ""
        seeded (bool, optional): with the decorator: see
            :attr:`MetricSpec.seeded`. Default: False
        correct_only (bool, optional): with the decorator: see
            :attr:`MetricSpec.correct_only`. Default: False

    Returns:
        MetricSpec, or the decorator (which returns the function unchanged).

    Examples::

        >>> from captum_vit.metrics import MetricOutput, register_metric
        >>> @register_metric(name="peak", columns={"peak": True},
        ...                  description="largest attribution")
        ... def _peak(ctx, **options):
        ...     peak = ctx.attributions.flatten(1).amax(dim=1)
        ...     return MetricOutput({"peak": peak})
    """
    if spec is not None:
        spec = _check_spec(spec)
        _METRICS[spec.name] = spec
        return spec
    if name is None or columns is None:
        raise TypeError("register_metric needs a MetricSpec, or name= and columns=")

    def decorator(fn: MetricFn) -> MetricFn:
        register_metric(
            MetricSpec(
                name,
                dict(columns),
                tuple(needs),
                fn,
                description,
                title,
                seeded,
                correct_only,
            )
        )
        return fn

    return decorator


def list_metrics() -> List[str]:
    r"""Names of the registered metrics, in table order.

    Returns:
        list[str]: names accepted by :func:`get_metric` and ``--metrics``.

    Examples::

        >>> from captum_vit.metrics import get_metric, list_metrics
        >>> "deletion" in list_metrics()
        True
        >>> [(n, get_metric(n).title, get_metric(n).columns) for n in list_metrics()][0]
        ('deletion', 'Deletion AUC', {'deletion_auc': False})
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

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import MetricContext, get_metric
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x, attr = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
        >>> ctx = MetricContext(forward_func=model, inputs=x, attributions=attr,
        ...                     target=0, patch_size=2)
        >>> out = get_metric("deletion").compute(ctx, n_steps=4)
        >>> out.values["deletion_auc"].shape, out.curve.curve.shape
        (torch.Size([2]), torch.Size([2, 5]))
    """
    try:
        return _METRICS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown metric {name!r}; available: {', '.join(_METRICS)}"
        ) from None
