"""Every import of a private or version-dependent Captum helper lives here.

Captum's plugins tend to reach into ``captum._utils``; keeping those imports in
one module means a Captum upgrade breaks (at most) this file.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

try:  # captum >= 0.6
    from captum.log import log_usage
except ImportError:  # pragma: no cover - very old captum

    def log_usage(*_args: Any, **_kwargs: Any) -> Callable[[_F], _F]:
        def deco(func: _F) -> _F:
            return func

        return deco


from captum._utils.common import (  # noqa: E402
    _format_additional_forward_args,
    _format_tensor_into_tuples,
)

__all__ = ["log_usage", "_format_additional_forward_args", "_format_tensor_into_tuples"]
