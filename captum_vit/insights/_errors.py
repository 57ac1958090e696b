"""What the visualiser refuses or fails to do, as exceptions with a code.

The domain object (:class:`~captum_vit.insights.AttributionVisualizer`) raises
these; the HTTP server turns the ``code`` into a status (its table
:data:`captum_vit.insights._http.ERROR_STATUS`). Python callers get ordinary
exceptions: :class:`InvalidArgument` is a ``ValueError``, :class:`NotFound` a
``LookupError``.
"""

from __future__ import annotations


class InsightsError(Exception):
    """Base class: ``code`` names the kind of error, ``message`` says what."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(InsightsError, ValueError):
    """An argument the visualiser cannot use (unknown method, bad target...)."""

    code = "bad_request"


class NotFound(InsightsError, LookupError):
    """No such image or job."""

    code = "not_found"


class TooLarge(InsightsError, ValueError):
    """An upload over the size limit."""

    code = "payload_too_large"


class MethodFailed(InsightsError, RuntimeError):
    """A method raised on this input."""

    code = "method_failed"


class Busy(InsightsError, RuntimeError):
    """No model replica became free in time."""

    code = "busy"


class Interrupted(InsightsError, RuntimeError):
    """A computation was stopped: ``code`` is ``"timeout"`` (its time budget
    ran out) or ``"cancelled"`` (its client went away or cancelled it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def describe(e: BaseException) -> str:
    """The message shown for an exception: its own for the visualiser's errors,
    ``Type: message`` otherwise."""
    if isinstance(e, InsightsError):
        return e.message
    return f"{type(e).__name__}: {e}"
