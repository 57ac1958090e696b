"""The README's examples: the first python block (and the docs' index page's)
runs as written, offline (the embedded model), with the shapes its comments say;
every call of the public API the README shows binds to the real signature."""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
import torch

import captum_vit as cv
import captum_vit.metrics as cvm

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _first_python_block(path: Path) -> str:
    text = path.read_text()
    if path.suffix == ".md":
        return re.search(r"```python\n(.*?)```", text, re.S).group(1)
    block = re.search(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", text).group(1)
    return textwrap.dedent(block)


@pytest.mark.parametrize("page", ["README.md", "docs/index.rst"])
def test_first_example_runs_offline(page, monkeypatch):
    code = _first_python_block(ROOT / page)
    assert "pretrained=True" not in code, "the first example must run offline"
    # no network: a download attempt fails instead of hanging
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ns: dict = {}
    exec(compile(code, f"{page} (first python block)", "exec"), ns)
    x, attr, grid = ns["x"], ns["attr"], ns["grid"]
    assert attr.shape == x.shape and torch.isfinite(attr).all()
    assert grid.shape == (x.shape[0], 8, 8)


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


#: the README's module aliases: ``cv`` is ``captum_vit``, ``cvm`` its metrics
ALIASES = {"cv": cv, "cvm": cvm}


def readme_calls(text: str) -> Iterator[Tuple[str, List[str]]]:
    """``(dotted name, argument texts)`` of every ``cv.NAME(...)`` and
    ``cvm.NAME(...)`` call, the name starting with the alias."""
    for match in re.finditer(r"\b(?:cvm?)\.[A-Za-z_][\w.]*\(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        yield match.group(0)[:-1], _split_args(text[match.end() : i - 1])


def test_readme_calls_bind_to_the_api():
    calls = list(readme_calls(README.read_text()))
    assert len(calls) >= 5  # the parser found the examples
    assert any(name.startswith("cvm.") for name, _ in calls)  # the metrics' table
    for name, args in calls:
        alias, *parts = name.split(".")
        obj = ALIASES[alias]
        for part in parts:
            obj = getattr(obj, part)
        positional = [a for a in args if not re.match(r"^\w+\s*=", a)]
        keywords = [a.split("=")[0].strip() for a in args if a not in positional]
        signature = inspect.signature(obj)
        signature.bind(*positional, **dict.fromkeys(keywords))  # raises if wrong


def test_parser_sees_a_wrong_call():
    (call,) = readme_calls("x = cv.patch_window(model)\n")
    with pytest.raises(TypeError, match="inputs"):
        inspect.signature(cv.patch_window).bind(*call[1])
