r"""The method x metric x dataset runner behind ``captum-vit benchmark``.

Every method (:func:`captum_vit.attr.list_methods`, or any Captum
``Attribution`` through a factory) explains every sample of a dataset
(:func:`make_dataset`: the bundled synthetic benchmark, ImageNet-Segmentation,
an ImageNet folder, CIFAR-10) in batches; every metric of the registry
(:func:`captum_vit.metrics.list_metrics`) scores each sample;
:class:`BenchmarkResult` holds the per-sample values (per repeat seed) and makes
the table (mean over samples), its Markdown and CSV forms, one bar chart per
metric, and the :class:`Leaderboard` (bootstrap intervals, the paired comparison
with each column's best method, ranks, a heat-map and a rank plot). Sanity
baselines (:func:`list_baselines`: a random map, an edge detector, a randomised
model's map) run beside the methods. Under
``torchrun`` the batches are sharded over the ranks and gathered on rank 0,
which returns exactly the single-process result.

Examples::

    >>> from captum_vit.benchmark import load_model, make_dataset, run_benchmark
    >>> lm = load_model()  # the embedded default
    >>> ds = make_dataset("synthetic", image_size=lm.image_size,
    ...                   transform=lm.transform, limit=32)
    >>> res = run_benchmark(lm.model, ds, ["raw_attention", "rollout"],
    ...                     ["deletion", "segmentation"], lm.mean, lm.std)
    >>> res.save("out/benchmark")
"""

from ..metrics import (  # the registry, importable from here as before
    MetricContext,
    MetricSpec,
    get_metric,
    list_metrics,
    register_metric,
)
from ._baselines import (
    EdgeMap,
    RandomisedModelMap,
    RandomMap,
    create_baseline,
    is_baseline,
    list_baselines,
    register_baseline,
)
from ._data import DATASETS, BenchmarkDataset, make_dataset
from ._explain import default_methods, explain_images, explain_prompts, mean_scores
from ._leaderboard import Entry, Leaderboard
from ._models import DEFAULT_MODEL, LoadedModel, ModelLoadError, load_model
from ._runner import BACKENDS, BenchmarkResult, check_backend, run_benchmark
from ._stats import Comparison, Interval, bootstrap_mean, paired_bootstrap

__all__ = [
    "BACKENDS",
    "check_backend",
    "DATASETS",
    "DEFAULT_MODEL",
    "BenchmarkDataset",
    "BenchmarkResult",
    "Comparison",
    "EdgeMap",
    "Entry",
    "Interval",
    "Leaderboard",
    "LoadedModel",
    "ModelLoadError",
    "MetricContext",
    "MetricSpec",
    "default_methods",
    "explain_images",
    "RandomMap",
    "RandomisedModelMap",
    "bootstrap_mean",
    "create_baseline",
    "explain_prompts",
    "get_metric",
    "is_baseline",
    "list_baselines",
    "list_metrics",
    "load_model",
    "make_dataset",
    "mean_scores",
    "paired_bootstrap",
    "register_baseline",
    "register_metric",
    "run_benchmark",
]
