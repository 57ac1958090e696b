"""The sphinx documentation builds with warnings as errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.docs
def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(ROOT / "docs"),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # every tutorial is a page showing the figures committed with it
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        page = (tmp_path / "html" / "tutorials" / f"{nb.stem}.html").read_text()
        outputs = [
            o
            for cell in json.loads(nb.read_text())["cells"]
            for o in cell.get("outputs", [])
        ]
        figures = sum(
            any(k.startswith("image/") for k in o.get("data", {})) for o in outputs
        )
        assert page.count("<img ") >= figures, nb.name


def test_every_page_is_in_the_toctree():
    index = (ROOT / "docs" / "index.rst").read_text()
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.rst") if p.stem != "index")
    # the tutorials are pages too (docs/tutorials links to ../tutorials)
    pages += [f"tutorials/{p.stem}" for p in sorted(ROOT.glob("tutorials/*.ipynb"))]
    missing = [p for p in pages if f"   {p}\n" not in index]
    assert not missing, f"docs pages not in index.rst's toctree: {missing}"


def test_docs_tutorials_are_the_notebooks():
    assert (ROOT / "docs" / "tutorials").resolve() == (ROOT / "tutorials").resolve()


#: a line that is only an upper-case placeholder (``MEMORY_TABLE``, ``PLACEHOLDER``)
#: left where a measured table or text was to be pasted
PLACEHOLDER_LINE = re.compile(
    r"^[ \t]*(?:[A-Z][A-Z0-9_]*_TABLE|PLACEHOLDER)[ \t]*$", re.M
)


def test_no_docs_page_has_a_placeholder_line():
    left = [
        f"{page.name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group().strip()}"
        for page in sorted((ROOT / "docs").glob("*.rst"))
        for text in [page.read_text()]
        for m in PLACEHOLDER_LINE.finditer(text)
    ]
    assert not left, f"placeholders left in the docs: {left}"
