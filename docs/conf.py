"""Sphinx configuration of captum_vit's documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import captum_vit  # noqa: E402

project = "captum_vit"
author = "captum_vit developers"
release = captum_vit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
html_theme = "furo"
html_title = f"captum_vit {release}"
html_static_path = ["_static"]

# The tutorials (docs/tutorials links to ../tutorials) are rendered from the
# outputs committed with them (figures included) rather than executed again:
# the suite already executes every notebook (tests/test_tutorials.py), and a
# second execution inside the docs build would double the slowest part of
# `make test`; the suite also checks that the committed outputs belong to the
# current code (`make notebooks` refreshes them).
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath"]
nitpicky = False
