"""Parameters of the registered methods, as the page shows and sends them.

Each method's constructor (less ``model``) and ``attribute`` (less the
arguments the visualiser sets itself) are read with :mod:`inspect`; the
parameters with a simple type (bool, int, float, str, optionally None) become
form fields, and values sent by the page are checked and converted here, so a
bad parameter is a clear 400 message rather than an error deep in a method.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Dict, List, Optional, Tuple

from ..attr import _registry

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
}

MAX_STR_LEN = 200


class ParameterError(ValueError):
    """A parameter sent for a method is unknown or has a bad value."""


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


def _specs(func, skip) -> Tuple[List[Dict[str, Any]], List[str]]:
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
        spec = {
            "name": p.name,
            "type": kind[0],
            "nullable": kind[1],
            "default": None if required else p.default,
            "required": required,
        }
        if p.name in KNOWN_CHOICES and kind[0] == "str":
            spec["choices"] = list(KNOWN_CHOICES[p.name])
        specs.append(spec)
    return specs, unsupported


def method_spec(name: str) -> Dict[str, Any]:
    """The page's description of a registered method.

    Returns:
        dict: ``name``, ``title`` (the class name), ``doc`` (first docstring
        line), ``params`` (list of field descriptions, each with ``where``:
        ``"init"`` or ``"attribute"``), ``available`` and ``reason``.
    """
    cls = _registry._METHODS[name]
    init, bad_init = _specs(cls.__init__, _SKIP_INIT)
    attr, bad_attr = _specs(cls.attribute, _SKIP_ATTRIBUTE)
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


def _coerce(method: str, spec: Dict[str, Any], value: Any) -> Any:
    name, kind = spec["name"], spec["type"]
    where = f"parameter {name!r} of method {method!r}"
    if value is None or (isinstance(value, str) and value == "" and kind != "str"):
        if spec["nullable"]:
            return None
        raise ParameterError(f"{where} may not be empty")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ParameterError(f"{where} must be true or false, got {value!r}")
    if kind == "int":
        if isinstance(value, bool):
            raise ParameterError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ParameterError(f"{where} must be an integer, got {value!r}")
    if kind == "float":
        if isinstance(value, bool):
            raise ParameterError(f"{where} must be a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ParameterError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(out):
            raise ParameterError(f"{where} must be finite, got {value!r}")
        return out
    # str
    if not isinstance(value, str):
        raise ParameterError(f"{where} must be a string, got {value!r}")
    if len(value) > MAX_STR_LEN:
        raise ParameterError(f"{where} is longer than {MAX_STR_LEN} characters")
    if "choices" in spec and value not in spec["choices"]:
        raise ParameterError(f"{where} must be one of {spec['choices']}, got {value!r}")
    return value


def parse_params(name: str, params: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Check the parameters sent for method ``name``.

    Args:
        name (str): a registered method name.
        params (dict or None): ``{parameter: value}`` from the page.

    Returns:
        tuple of dict: ``(init_kwargs, attribute_kwargs)``.

    Raises:
        ParameterError: unknown method, unknown parameter, bad value.
    """
    if name not in _registry._METHODS:
        raise ParameterError(
            f"unknown method {name!r}; available: {', '.join(_registry.list_methods())}"
        )
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParameterError(f"parameters of method {name!r} must be an object")
    spec = method_spec(name)
    if not spec["available"]:
        raise ParameterError(f"method {name!r} cannot run here: {spec['reason']}")
    by_name = {s["name"]: s for s in spec["params"]}
    unknown = sorted(set(params) - set(by_name))
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for method "
            f"{name!r}; known: {', '.join(sorted(by_name)) or 'none'}"
        )
    init: Dict[str, Any] = {}
    attr: Dict[str, Any] = {}
    for key, s in by_name.items():
        if key in params:
            value = _coerce(name, s, params[key])
        elif s["required"]:
            raise ParameterError(f"method {name!r} needs parameter {key!r}")
        else:
            continue
        (init if s["where"] == "init" else attr)[key] = value
    return init, attr
