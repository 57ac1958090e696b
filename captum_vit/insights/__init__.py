"""A web visualiser for Vision-Transformer explanations (the role Captum
Insights had; Captum 0.9 removed Insights).

:class:`AttributionVisualizer` takes Captum Insights' arguments (models,
classes, dataset, score_func, features) and serves a page (Flask, threaded,
bound to 127.0.0.1 by default) on which a person picks or uploads an image,
sees the top-k predictions, explains a class with several
:mod:`captum_vit.attr` methods side by side, browses the raw attention of each
layer and head, and computes deletion / insertion / perturbation AUCs with a
progress bar. ``captum-vit insights`` starts it on the embedded default model
and the synthetic benchmark. :func:`register_with_captum_insights` adds the
captum_vit methods to Captum Insights itself where captum <= 0.8 is installed.

Needs Flask and Pillow: ``pip install "captum-vit[insights]"``.
"""

from ._captum_insights import register_with_captum_insights
from ._default import default_visualizer
from ._features import Batch, ImageFeature
from .app import METRICS, AttributionVisualizer

__all__ = [
    "AttributionVisualizer",
    "Batch",
    "ImageFeature",
    "METRICS",
    "default_visualizer",
    "register_with_captum_insights",
]
