"""The sphinx documentation builds with warnings as errors."""

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


def test_every_page_is_in_the_toctree():
    index = (ROOT / "docs" / "index.rst").read_text()
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.rst") if p.stem != "index")
    missing = [p for p in pages if f"   {p}\n" not in index]
    assert not missing, f"docs pages not in index.rst's toctree: {missing}"
