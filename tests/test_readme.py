"""Every call of the public API that the README shows binds to the real
signature (names exist, positional and keyword arguments fit)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import captum_vit as cv

README = Path(__file__).resolve().parents[1] / "README.md"


def _split_args(text: str) -> List[str]:
    args, depth, current = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            args.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        args.append(current.strip())
    return args


def readme_calls(text: str) -> Iterator[Tuple[str, List[str]]]:
    """``(dotted name, argument texts)`` of every ``cv.NAME(...)`` call."""
    for match in re.finditer(r"\bcv\.([A-Za-z_][\w.]*)\(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        yield match.group(1), _split_args(text[match.end() : i - 1])


def test_readme_calls_bind_to_the_api():
    calls = list(readme_calls(README.read_text()))
    assert len(calls) >= 5  # the parser found the examples
    for name, args in calls:
        obj = cv
        for part in name.split("."):
            obj = getattr(obj, part)
        positional = [a for a in args if not re.match(r"^\w+\s*=", a)]
        keywords = [a.split("=")[0].strip() for a in args if a not in positional]
        signature = inspect.signature(obj)
        signature.bind(*positional, **dict.fromkeys(keywords))  # raises if wrong


def test_parser_sees_a_wrong_call():
    (call,) = readme_calls("x = cv.patch_window(model)\n")
    with pytest.raises(TypeError, match="inputs"):
        inspect.signature(cv.patch_window).bind(*call[1])
