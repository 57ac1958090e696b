"""Parameters of the registered methods, as the page shows and sends them.

Each method's constructor (less ``model``) and ``attribute`` (less the
arguments the visualiser sets itself) are read with :mod:`inspect`; the
parameters with a simple type (bool, int, float, str, optionally None) become
form fields, and values sent by the page are checked and converted here, so a
bad parameter is a clear 400 message rather than an error deep in a method.

Every integer parameter has bounds (:data:`INT_LIMITS` by name, else
:data:`DEFAULT_INT_LIMITS`): a request cannot ask for 2000 integration steps
or a seed that overflows. Model-dependent ranges (a layer, a head) are checked
by the method's own constructor.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Set, Tuple

from ._core_api import list_methods, method_class
from ._errors import InvalidArgument

# Arguments the visualiser itself passes (or that cannot come from a form).
_SKIP_INIT = {"self", "model", "show_progress"}
_SKIP_ATTRIBUTE = {
    "self",
    "inputs",
    "target",
    "additional_forward_args",
    "output",
    "show_progress",
}

#: Known choices of string parameters shared by several methods.
KNOWN_CHOICES: Dict[str, List[str]] = {
    "head_fusion": ["mean", "max", "min"],
    "interpolate_mode": ["bilinear", "nearest", "bicubic"],
    "pooling": ["mean", "model"],  # LeGrad
}

#: Bounds ``(low, high)`` of integer parameters, by parameter name: the work a
#: method does grows with ``steps`` (TAM, Beyond Intuition) and memory with
#: ``internal_batch_size``; a seed must fit the generators.
INT_LIMITS: Dict[str, Tuple[int, int]] = {
    "steps": (1, 100),
    "internal_batch_size": (1, 256),
    "seed": (0, 2**32 - 1),
}

#: Bounds of any other integer parameter (layers, heads: the method checks the
#: model's own range).
DEFAULT_INT_LIMITS: Tuple[int, int] = (-1024, 1024)

MAX_STR_LEN = 200


class MethodCall(NamedTuple):
    """A checked request for one method: its name, constructor and
    ``attribute`` keyword arguments, and the label shown with its map."""

    name: str
    init: Dict[str, Any]
    attr: Dict[str, Any]
    label: str


def _kind(param: inspect.Parameter) -> Optional[Tuple[str, bool]]:
    """``(type, nullable)`` of a parameter, or None if no form field fits."""
    ann = param.annotation
    ann = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    ann = ann.replace("typing.", "").replace(" ", "")
    default = param.default
    nullable = default is None or "Optional[" in ann or "None" in ann
    if isinstance(default, bool):
        return "bool", False
    if isinstance(default, int):
        return "int", False
    if isinstance(default, float):
        return "float", False
    if isinstance(default, str):
        return "str", False
    for name in ("bool", "int", "float", "str"):
        if ann in (name, f"Optional[{name}]", f"{name}|None", f"Union[{name},None]"):
            return name, nullable
    return None


def _specs(
    func: Callable[..., Any],
    skip: Set[str],
    limits: Mapping[str, Tuple[int, int]],
) -> Tuple[List[Dict[str, Any]], List[str]]:
    specs, unsupported = [], []
    for p in inspect.signature(func).parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind = _kind(p)
        required = p.default is inspect.Parameter.empty
        if kind is None:
            if required:
                unsupported.append(p.name)
            continue
        spec: Dict[str, Any] = {
            "name": p.name,
            "type": kind[0],
            "nullable": kind[1],
            "default": None if required else p.default,
            "required": required,
        }
        if kind[0] == "int":
            spec["min"], spec["max"] = limits.get(p.name, DEFAULT_INT_LIMITS)
        if p.name in KNOWN_CHOICES and kind[0] == "str":
            spec["choices"] = list(KNOWN_CHOICES[p.name])
        specs.append(spec)
    return specs, unsupported


def method_spec(
    name: str, limits: Optional[Mapping[str, Tuple[int, int]]] = None
) -> Dict[str, Any]:
    """The page's description of a registered method.

    Args:
        name (str): a registered method name.
        limits (mapping, optional): integer bounds by parameter name, over
            :data:`INT_LIMITS`. Default: None

    Returns:
        dict: ``name``, ``title`` (the class name), ``doc`` (first docstring
        line), ``params`` (list of field descriptions, each with ``where``:
        ``"init"`` or ``"attribute"``; integers with ``min`` and ``max``),
        ``available`` and ``reason``.
    """
    cls = method_class(name)
    bounds = {**INT_LIMITS, **(limits or {})}
    init, bad_init = _specs(cls.__init__, _SKIP_INIT, bounds)
    attr, bad_attr = _specs(cls.attribute, _SKIP_ATTRIBUTE, bounds)
    for s in init:
        s["where"] = "init"
    for s in attr:
        s["where"] = "attribute"
    bad = bad_init + bad_attr
    doc = (inspect.getdoc(cls) or "").strip().split("\n")[0]
    return {
        "name": name,
        "title": cls.__name__,
        "doc": doc,
        "params": init + attr,
        "available": not bad,
        "reason": (
            f"required parameters without a form field: {', '.join(bad)}" if bad else ""
        ),
    }


def coerce(method: str, spec: Dict[str, Any], value: Any) -> Any:
    """Check and convert one value sent for parameter ``spec`` of ``method``.

    Raises:
        InvalidArgument: the value does not fit (the message says why).
    """
    name, kind = spec["name"], spec["type"]
    where = f"parameter {name!r} of method {method!r}"
    if value is None or (isinstance(value, str) and value == "" and kind != "str"):
        if spec["nullable"]:
            return None
        raise InvalidArgument(f"{where} may not be empty")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InvalidArgument(f"{where} must be true or false, got {value!r}")
    if kind == "int":
        return _coerce_int(where, spec, value)
    if kind == "float":
        if isinstance(value, bool):
            raise InvalidArgument(f"{where} must be a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgument(
                f"{where} must be a number, got {_short(value)}"
            ) from None
        if not math.isfinite(out):
            raise InvalidArgument(f"{where} must be finite, got {value!r}")
        return out
    # str
    if not isinstance(value, str):
        raise InvalidArgument(f"{where} must be a string, got {_short(value)}")
    if len(value) > MAX_STR_LEN:
        raise InvalidArgument(f"{where} is longer than {MAX_STR_LEN} characters")
    if "choices" in spec and value not in spec["choices"]:
        raise InvalidArgument(
            f"{where} must be one of {spec['choices']}, got {value!r}"
        )
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce_int(where: str, spec: Dict[str, Any], value: Any) -> int:
    out: Optional[int] = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, numbers.Integral):
        out = int(value)
    elif isinstance(value, float) and value.is_integer():
        out = int(value)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            out = int(value.strip())
        except ValueError:
            pass
    if out is None:
        raise InvalidArgument(f"{where} must be an integer, got {_short(value)}")
    lo, hi = (
        spec.get("min", DEFAULT_INT_LIMITS[0]),
        spec.get("max", DEFAULT_INT_LIMITS[1]),
    )
    if not lo <= out <= hi:
        raise InvalidArgument(
            f"{where} must be an integer in [{lo}, {hi}], got {_short(out)}"
        )
    return out


def parse_call(
    name: Any, params: Any, limits: Optional[Mapping[str, Tuple[int, int]]] = None
) -> MethodCall:
    """Check the parameters sent for method ``name``.

    Args:
        name (str): a registered method name.
        params (dict or None): ``{parameter: value}`` from the page (None:
            no parameters).
        limits (mapping, optional): integer bounds by parameter name, over
            :data:`INT_LIMITS`. Default: None

    Returns:
        MethodCall: the method's constructor and ``attribute`` arguments.

    Raises:
        InvalidArgument: unknown method, unknown parameter, bad value.
    """
    if not isinstance(name, str) or name not in list_methods():
        raise InvalidArgument(
            f"unknown method {_short(name)}; available: {', '.join(list_methods())}"
        )
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidArgument(
            f"the parameters of method {name!r} must be an object "
            f"{{name: value}}, got {type(params).__name__}"
        )
    spec = method_spec(name, limits)
    if not spec["available"]:
        raise InvalidArgument(f"method {name!r} cannot run here: {spec['reason']}")
    by_name = {s["name"]: s for s in spec["params"]}
    unknown = sorted(str(k) for k in set(params) - set(by_name))
    if unknown:
        raise InvalidArgument(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for method "
            f"{name!r}; known: {', '.join(sorted(by_name)) or 'none'}"
        )
    init: Dict[str, Any] = {}
    attr: Dict[str, Any] = {}
    for key, s in by_name.items():
        if key in params:
            value = coerce(name, s, params[key])
        elif s["required"]:
            raise InvalidArgument(f"method {name!r} needs parameter {key!r}")
        else:
            continue
        (init if s["where"] == "init" else attr)[key] = value
    label = name + "".join(
        f" {k}={v}"
        for k, v in sorted({**init, **attr}.items())
        if by_name[k]["default"] != v
    )
    return MethodCall(name, init, attr, label)
