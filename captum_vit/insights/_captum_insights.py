"""Registration of the captum_vit methods into Captum Insights (captum <= 0.8)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from . import _methods
from ._core_api import list_methods, method_class


def register_with_captum_insights(methods: Optional[Sequence[str]] = None) -> List[str]:
    r"""Add captum_vit methods to Captum Insights' method list (captum <= 0.8).

    Captum Insights looks methods up by their Captum name
    (``Attribution.get_name()``, e.g. ``"Attention Rollout"``) in
    ``captum.insights.attr_vis.config.ATTRIBUTION_NAMES_TO_METHODS`` and
    their form fields in ``ATTRIBUTION_METHOD_CONFIG``; it builds a method
    with ``cls(model)`` and calls ``attribute(inputs_tuple, target=...,
    **arguments)``, which every captum_vit method accepts. This function adds
    each method to both tables (numbers and choices become Insights'
    ``NumberConfig`` / ``StrEnumConfig`` fields with their defaults; string
    fields ``StrConfig``; values from the form are converted back to the
    parameter's type). Calling it twice is harmless.

    Args:
        methods (sequence of str, optional): registry names to add
            (:func:`captum_vit.attr.list_methods`). Default: None (all)

    Returns:
        list of str: the Insights names added.

    Raises:
        ImportError: captum has no ``captum.insights`` (Captum 0.9 removed
            it); use :class:`captum_vit.insights.AttributionVisualizer`.

    Examples::

        >>> from captum.insights import AttributionVisualizer
        >>> from captum_vit.insights import register_with_captum_insights
        >>> register_with_captum_insights()
        ['Attention Rollout', 'Generic Attention', ...]
        >>> vis = AttributionVisualizer(models=[vit], classes=classes,
        ...                             features=[image_feature], dataset=data)
    """
    try:
        from captum.insights.attr_vis import config as insights_config
    except ImportError as e:
        raise ImportError(
            "captum.insights is not available (Captum 0.9 removed Insights; it "
            "needs captum <= 0.8 and its 'insights' extra). Use "
            "captum_vit.insights.AttributionVisualizer instead."
        ) from e
    names = list_methods() if methods is None else list(methods)
    added = []
    for name in names:
        if name not in list_methods():
            raise ValueError(
                f"unknown method {name!r}; available: {', '.join(list_methods())}"
            )
        cls = method_class(name)
        spec = _methods.method_spec(name)
        if not spec["available"]:
            continue
        insights_name = cls.get_name()
        params: Dict[str, Any] = {}
        post: Dict[str, Any] = {}
        for p in spec["params"]:
            if p["where"] != "init" and p["required"]:
                continue
            field = _insights_field(insights_config, p)
            if field is None:
                continue
            params[p["name"]] = field
            post[p["name"]] = _converter(name, p)
        insights_config.ATTRIBUTION_NAMES_TO_METHODS[insights_name] = _insights_class(
            cls, spec
        )
        insights_config.ATTRIBUTION_METHOD_CONFIG[insights_name] = (
            insights_config.ConfigParameters(params=params, post_process=post)
        )
        added.append(insights_name)
    return added


def _insights_field(cfg: Any, p: Dict[str, Any]) -> Any:
    default = p["default"]
    if p["type"] == "str" and "choices" in p:
        return cfg.StrEnumConfig(value=default, limit=list(p["choices"]))
    if p["type"] in ("int", "float") and default is not None:
        return cfg.NumberConfig(value=default, limit=(None, None))
    if p["type"] == "bool":
        return cfg.StrEnumConfig(
            value=str(bool(default)).lower(), limit=["true", "false"]
        )
    if p["type"] in ("int", "float", "str"):
        return cfg.StrConfig(value="" if default is None else str(default))
    return None


def _converter(method: str, p: Dict[str, Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        return _methods.coerce(method, p, value)

    return convert


def _insights_class(cls: Any, spec: Dict[str, Any]) -> type:
    """A subclass of ``cls`` that Insights can build with ``cls(model)`` and
    call with every form field: constructor fields are split off ``attribute``'s
    keyword arguments and applied to a fresh instance."""
    init_names = {p["name"] for p in spec["params"] if p["where"] == "init"}

    def _attribute(
        self: Any,
        inputs: Any,
        target: Any = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> Any:
        init = {k: kwargs.pop(k) for k in list(kwargs) if k in init_names}
        method = cls(self._insights_model, **init) if init else self
        return cls.attribute(
            method,
            inputs,
            target=target,
            additional_forward_args=additional_forward_args,
            **kwargs,
        )

    def attribute(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _attribute(self, *args, **kwargs)

    # Insights calls ``attribute.__wrapped__(self, ...)`` (the function under
    # Captum's ``log_usage``) and reads its signature.
    attribute.__wrapped__ = _attribute  # type: ignore[attr-defined]

    def __init__(self: Any, model: Any, **kwargs: Any) -> None:
        cls.__init__(self, model, **kwargs)
        self._insights_model = model

    _ForInsights = type(
        cls.__name__,
        (cls,),
        {
            "__init__": __init__,
            "attribute": attribute,
            "__doc__": cls.__doc__,
            "__module__": __name__,
        },
    )

    _ForInsights.__qualname__ = cls.__qualname__
    return _ForInsights
