"""A registry of methods by name, for the CLI, the benchmark and the visualiser.

Like timm's ``list_models``: names are lower-case, ``list_methods`` accepts
fnmatch patterns.
"""

from __future__ import annotations

import fnmatch
from typing import Dict, List, Type

from torch import nn

from ._base import ViTAttribution

_METHODS: Dict[str, Type[ViTAttribution]] = {}


def register_method(name: str):
    """Class decorator / function registering a method under ``name``."""

    def deco(cls):
        _METHODS[name] = cls
        return cls

    return deco


def list_methods(pattern: str = "*") -> List[str]:
    """Registered method names matching the fnmatch ``pattern``, sorted."""
    return sorted(n for n in _METHODS if fnmatch.fnmatch(n, pattern))


def create_method(name: str, model: nn.Module, **kwargs) -> ViTAttribution:
    """Instantiate the method registered as ``name`` on ``model``.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    try:
        cls = _METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; available: {', '.join(list_methods())}"
        ) from None
    return cls(model, **kwargs)
