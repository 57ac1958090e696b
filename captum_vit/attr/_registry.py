"""A registry of methods by name, for the CLI, the benchmark and the visualiser.

Like timm's ``register_model`` / ``list_models``: each method registers where
it is defined (``@register_method("rollout")`` on the class), names are
lower-case and ``list_methods`` accepts fnmatch patterns.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Dict, List, Optional, Type, TypeVar

from torch import nn

from .. import adapters
from ._base import ViTAttribution

__all__ = ["register_method", "list_methods", "get_method", "create_method"]

_METHODS: Dict[str, Type[ViTAttribution]] = {}

M = TypeVar("M", bound=Type[ViTAttribution])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator registering a method under ``name``.

    Args:
        name (str): the registry name (lower-case, as the CLI and the
            visualiser show it).

    Examples::

        >>> @register_method("my_method")
        ... class MyMethod(ViTAttribution):
        ...     def _attribute(self, inputs, target, args):
        ...         ...
    """

    def deco(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, ViTAttribution)):
            raise TypeError(f"{cls!r} is not a ViTAttribution subclass")
        _METHODS[name] = cls
        return cls

    return deco


def list_methods(pattern: str = "*", model: Optional[nn.Module] = None) -> List[str]:
    """Registered method names matching the fnmatch ``pattern``, sorted.

    Args:
        pattern (str, optional): fnmatch pattern. Default: ``"*"``
        model (torch.nn.Module, optional): keep only the methods that apply to
            this model (on a windowed, hierarchical model such as Swin, those
            written over the token graph; on CaiT, those defined across its
            two phases; ``docs/token_graph.rst``).
            Default: None (all)
    """
    names = sorted(n for n in _METHODS if fnmatch.fnmatch(n, pattern))
    if model is None:
        return names
    adapter = adapters.get(model)
    return [n for n in names if _METHODS[n]._refusal(adapter) is None]


def get_method(name: str) -> Type[ViTAttribution]:
    """The class registered as ``name`` (e.g. to read its constructor's
    parameters with :func:`inspect.signature`).

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; available: {', '.join(list_methods())}"
        ) from None


def create_method(name: str, model: nn.Module, **kwargs: Any) -> ViTAttribution:
    """Instantiate the method registered as ``name`` on ``model``.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    return get_method(name)(model, **kwargs)
