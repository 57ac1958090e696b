"""The gallery (docs/gallery.rst, the README's picture): the committed image and
its numbers come from the command of the Makefile's ``gallery`` target, show
every registered method, and are reproduced by that command (re-run here on
two methods and two images)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import List

import numpy as np
import pytest
from PIL import Image

from captum_vit.attr import list_methods
from captum_vit.cli import main

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "docs" / "_static" / "gallery"
PNG = GALLERY / "explanations.png"
REFRESH = "re-run `make gallery` and commit docs/_static/gallery"
#: the subset re-run by the test: one non-negative and one signed method
SUBSET = ["transformer_lrp", "attn_lrp"]


def gallery_args() -> List[str]:
    """The arguments of ``captum-vit explain`` in the Makefile's gallery target."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^gallery:.*\n\t(.*)$", text, re.M)
    assert recipe, "the Makefile has no gallery target"
    words = shlex.split(recipe.group(1))
    assert words[0].endswith("captum-vit") and words[1] == "explain", words
    return words[2:]


def _option(args: List[str], name: str) -> str:
    return args[args.index(name) + 1]


def _with(args: List[str], name: str, value: str) -> List[str]:
    out = list(args)
    out[out.index(name) + 1] = value
    return out


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads((GALLERY / "explanations.json").read_text())


def test_the_gallery_shows_every_registered_method(committed):
    args = gallery_args()
    assert _option(args, "--methods") == "all"
    assert _option(args, "--out") == "docs/_static/gallery"
    assert committed["methods"] == list_methods(), REFRESH
    assert len(committed["images"]) == int(_option(args, "--samples")) == 6
    for entry in committed["images"]:
        assert 0.0 < entry["probability"] <= 1.0
        assert entry["source"].startswith("synthetic test sample")  # held out
        assert set(entry["patch_maps"]) == set(committed["methods"])
    # signed methods (negative relevance) are those drawn on the diverging map
    for name in ("lrp", "attn_lrp"):
        assert name in committed["signed"]
    for name in ("rollout", "transformer_lrp"):
        assert name not in committed["signed"]
    # one row per image, one column per method plus the picture
    with Image.open(PNG) as img:
        w, h = img.size
    # about 80 kB per column of six maps: small enough for the README
    assert PNG.stat().st_size < 100 * 2**10 * (len(committed["methods"]) + 1)
    cell = 100 * float(_option(args, "--cell"))  # pixels at the default dpi
    assert h == pytest.approx(6 * cell, rel=0.05)
    assert w > (len(committed["methods"]) + 1) * cell


def test_the_gallery_command_reproduces_the_committed_numbers(tmp_path, committed):
    args = _with(gallery_args(), "--methods", ",".join(SUBSET))
    args = _with(_with(args, "--samples", "2"), "--out", str(tmp_path))
    assert main(["explain", *args]) == 0
    fresh = json.loads((tmp_path / "explanations.json").read_text())
    assert fresh["signed"] == [m for m in SUBSET if m in committed["signed"]]
    for new, old in zip(fresh["images"], committed["images"][:2]):
        assert new["source"] == old["source"]
        assert new["prediction"] == old["prediction"]
        assert new["probability"] == pytest.approx(old["probability"], abs=1e-4)
        for method in SUBSET:
            np.testing.assert_allclose(
                new["patch_maps"][method],
                old["patch_maps"][method],
                atol=2e-3,  # maps are divided by their largest |value|
                err_msg=f"{method}: {REFRESH}",
            )
            for score, value in old["scores"][method].items():
                assert new["scores"][method][score] == pytest.approx(value, abs=0.01), (
                    f"{method} {score}: {REFRESH}"
                )


def test_the_readme_and_the_docs_show_the_gallery():
    readme = (ROOT / "README.md").read_text()
    assert "docs/_static/gallery/explanations.png" in readme
    page = (ROOT / "docs" / "gallery.rst").read_text()
    assert "_static/gallery/explanations.png" in page
    assert " ".join(gallery_args()) in page  # the command that made it
