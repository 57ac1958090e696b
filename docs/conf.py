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
]
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
nitpicky = False
