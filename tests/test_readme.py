"""The first example of the README and of the docs' index page runs as
written, offline (the embedded model), and gives the shapes its comments say."""

import re
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


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
