"""Reading and checking the JSON requests of the visualiser's API.

A request body must be ``application/json``, at most ``max_bytes`` long,
valid JSON nested at most :data:`MAX_DEPTH` levels (a deeply nested document
would otherwise exhaust the decoder's recursion: a 500), and a JSON object
with only the fields the endpoint knows. The fields' JSON types are checked
here (ranges that depend on the models are checked by the visualiser), and
method entries become :class:`~._methods.MethodCall` s with checked, bounded
parameters. Every refusal is a :class:`RequestError` with an error code of
:data:`captum_vit.insights._http.ERROR_STATUS`.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ._errors import InsightsError
from ._methods import MethodCall, parse_call

#: Deepest nesting of a JSON body (the API's own bodies are 4 deep).
MAX_DEPTH = 16


class RequestError(InsightsError):
    """An HTTP request the server refuses before it reaches the visualiser."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _bad(message: str) -> RequestError:
    return RequestError("bad_request", message)


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (iterative: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def read_json(request: Any, max_bytes: int) -> Dict[str, Any]:
    """The body of a Flask ``request`` as a JSON object.

    Raises:
        RequestError: ``unsupported_media_type`` (not JSON),
            ``payload_too_large`` (over ``max_bytes``), ``bad_json`` (not
            JSON, or nested too deeply), ``bad_request`` (not an object).
    """
    if not request.is_json:
        raise RequestError(
            "unsupported_media_type",
            "send the request body as JSON (Content-Type: application/json)",
        )
    length = request.content_length
    if length is not None and length > max_bytes:
        raise RequestError(
            "payload_too_large",
            f"the request body is too large: JSON bodies are limited to "
            f"{max_bytes} bytes, this one has {length}",
        )
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise RequestError(
            "payload_too_large",
            f"the request body is too large: JSON bodies are limited to "
            f"{max_bytes} bytes",
        )
    try:
        data = json.loads(raw)
    except RecursionError:
        data = None
        deep = True
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, huge ints
        raise RequestError(
            "bad_json", f"the request body is not valid JSON: {e}"
        ) from None
    else:
        deep = _depth(data) > MAX_DEPTH
    if deep:
        raise RequestError(
            "bad_json", f"the request body is nested more than {MAX_DEPTH} levels deep"
        )
    if not isinstance(data, dict):
        raise _bad(
            "the request body must be a JSON object {...}; got "
            + {list: "an array", str: "a string", type(None): "null"}.get(
                type(data), type(data).__name__
            )
        )
    return data


def check_fields(body: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse fields the endpoint does not know (a typo would be ignored)."""
    known = list(known)
    unknown = sorted(str(k) for k in body if k not in known)
    if unknown:
        raise _bad(
            f"unknown field(s) {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(known)}"
        )


def optional_int(body: Mapping[str, Any], key: str, what: str) -> Optional[int]:
    """``body[key]``: an integer or null/absent (never a bool or a float)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{key!r} must be {what} (an integer) or null")
    return value


def method_calls(
    value: Any, limits: Mapping[str, Tuple[int, int]], max_methods: int
) -> List[MethodCall]:
    """The ``methods`` field: names or ``{"name": ..., "params": {...}}``."""
    if not isinstance(value, list) or not value:
        raise _bad("'methods' must be a non-empty list of method names or objects")
    if len(value) > max_methods:
        raise _bad(f"at most {max_methods} methods per request")
    calls = []
    for item in value:
        if isinstance(item, str):
            name, params = item, None
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            extra = sorted(str(k) for k in set(item) - {"name", "params"})
            if extra:
                raise _bad(f"unknown keys {extra} in a method entry")
            name, params = item["name"], item.get("params")
        else:
            raise _bad("each method must be a name or {'name': ..., 'params': {...}}")
        calls.append(parse_call(name, params, limits))
    return calls
