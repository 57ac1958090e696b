"""Every import of a private or version-dependent Captum helper lives here.

Captum's plugins tend to reach into ``captum._utils``; keeping those imports in
one module means a Captum upgrade breaks (at most) this file.
"""

from __future__ import annotations

try:  # captum >= 0.6
    from captum.log import log_usage
except ImportError:  # pragma: no cover - very old captum
    import functools

    def log_usage(*_args, **_kwargs):
        def deco(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return func(*args, **kwargs)

            return wrapper

        return deco


from captum._utils.common import (  # noqa: E402
    _format_additional_forward_args,
    _format_tensor_into_tuples,
)

__all__ = ["log_usage", "_format_additional_forward_args", "_format_tensor_into_tuples"]
