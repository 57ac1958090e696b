"""A web visualiser for Vision-Transformer explanations (the role Captum
Insights had; Captum 0.9 removed Insights).

:class:`AttributionVisualizer` takes Captum Insights' arguments (models,
classes, dataset, score_func, features) and serves a page (Flask, threaded,
bound to 127.0.0.1 by default) on which a person picks or uploads an image,
sees the top-k predictions, explains a class with several
:mod:`captum_vit.attr` methods side by side, browses the raw attention of each
layer and head, and computes deletion / insertion / perturbation AUCs with a
progress bar; :meth:`AttributionVisualizer.render` shows the page inline in
Jupyter. ``captum-vit insights`` starts it on the embedded default model and
the synthetic benchmark. :func:`register_with_captum_insights` adds the
captum_vit methods to Captum Insights itself where captum <= 0.8 is installed.

The package by job. The domain: ``_visualizer`` (the object: models,
arguments, computations), ``_store`` (dataset samples and uploads),
``_images`` (upload decoding, overlays), ``_methods`` (method parameters:
schema, checks, bounds), ``_scores`` (the page's scores and curves),
``_jobs`` (model replicas, time budgets, score jobs), ``_features`` (Captum
Insights' data classes), ``_errors`` (what it refuses, with codes) and
``_core_api`` (the one door into :mod:`captum_vit.attr` and
:mod:`captum_vit.metrics`). The server: ``_serving`` (``serve`` / ``stop`` /
``render``), ``_server`` (the werkzeug server's life, hosts), ``_http`` (the
Flask app, error codes), ``_requests`` (JSON parsing and limits) and
``_widget`` (the notebook view). The server modules import the domain only
for type checking.

Needs Flask and Pillow: ``pip install "captum-vit[insights]"``.
"""

from ._captum_insights import register_with_captum_insights
from ._default import default_visualizer
from ._features import Batch, ImageFeature
from ._visualizer import AttributionVisualizer
from ._widget import InlinePage

__all__ = [
    "AttributionVisualizer",
    "Batch",
    "ImageFeature",
    "InlinePage",
    "default_visualizer",
    "register_with_captum_insights",
]
