"""The metric registry: one table of names, columns, better directions and needs;
its specs compute exactly what the metric functions compute; the docs and the
README list it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from captum.attr import Saliency

import captum_vit.metrics as M
from captum_vit.metrics import (
    NEEDS,
    MetricContext,
    MetricOutput,
    MetricSpec,
    _registry,
    get_metric,
    list_metrics,
    register_metric,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "metrics.rst"
README = ROOT / "README.md"

#: the benchmark's table order and names (the names the front-ends will use)
TABLE = [
    "deletion",
    "insertion",
    "positive_perturbation",
    "negative_perturbation",
    "pointing_game",
    "iou",
    "segmentation",
    "complexity",
    "faithfulness_correlation",
    "sensitivity_n",
    "infidelity",
    "sensitivity_max",
    "grid_pointing_game",
    "saco",
    "road",
    "model_randomisation",
    "open_vocab_iou",
    "similarity_deletion",
    "similarity_insertion",
]


@pytest.fixture
def registry():
    """Restore the registry after a test that registers metrics."""
    saved = dict(_registry._METRICS)
    yield
    _registry._METRICS.clear()
    _registry._METRICS.update(saved)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.randn(2, 3, 8, 8, generator=g)
    attr = torch.randn(2, 3, 8, 8, generator=g)
    masks = torch.rand(2, 8, 8, generator=g) > 0.5
    return model, x, attr, masks


def test_one_table_in_the_benchmark_order():
    assert list_metrics() == TABLE
    for name in TABLE:
        spec = get_metric(name)
        assert spec.name == name and spec.title and spec.description
        assert spec.columns and all(isinstance(v, bool) for v in spec.columns.values())
        assert set(spec.needs) <= set(NEEDS)
    assert get_metric("deletion").better() == "lower"
    assert get_metric("negative_perturbation").better() == "higher"
    assert get_metric("segmentation").better("seg_ap") == "higher"
    with pytest.raises(ValueError, match="name one"):
        get_metric("segmentation").better()
    with pytest.raises(ValueError, match="no column"):
        get_metric("iou").better("miou")
    with pytest.raises(ValueError, match="available: deletion, insertion"):
        get_metric("perturbation_positive")


def test_specs_compute_what_the_functions_compute(batch):
    model, x, attr, masks = batch
    t = torch.tensor([1, 3])
    ctx = MetricContext(
        forward_func=model,
        inputs=x,
        attributions=attr,
        target=t,
        masks=masks,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        patch_size=2,
        seed=3,
    )
    out = get_metric("deletion").compute(ctx)
    ref = M.deletion_auc(model, x, attr, t, patch_size=2)
    assert torch.equal(out.values["deletion_auc"], ref.auc)
    assert torch.equal(out.curve.curve, ref.curve)
    # options override the registered settings
    out = get_metric("insertion").compute(ctx, n_steps=4, baseline="zero")
    ref = M.insertion_auc(model, x, attr, t, n_steps=4, baseline="zero", patch_size=2)
    assert torch.equal(out.curve.curve, ref.curve) and out.curve.curve.shape == (2, 5)
    out = get_metric("positive_perturbation").compute(ctx)
    ref = M.perturbation_test(model, x, attr, t, mean=ctx.mean, std=ctx.std)
    assert torch.equal(out.values["pos_perturbation_auc"], ref.auc)
    seg = get_metric("segmentation").compute(ctx).values
    assert torch.equal(seg["seg_miou"], M.segmentation_test(attr, masks).miou)
    corr = get_metric("faithfulness_correlation").compute(ctx).values
    ref = M.faithfulness_correlation(model, x, attr, t, n_runs=32, patch_size=2, seed=3)
    torch.testing.assert_close(corr["faithfulness_corr"], ref, equal_nan=True)
    sens = get_metric("sensitivity_n").compute(ctx).values["sensitivity_n"]
    ref = M.sensitivity_n(
        model, x, attr, n=4, target=t, n_subsets=32, patch_size=2, seed=3
    )
    torch.testing.assert_close(sens, ref, equal_nan=True)
    comp = get_metric("complexity").compute(ctx).values["complexity"]
    assert torch.equal(comp, M.effective_complexity(attr, patch_size=2).double() / 16)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require")
def test_every_metric_runs_on_one_context(batch):
    model, x, attr, masks = batch
    cells = torch.tensor([0, 3])
    ctx = MetricContext(
        forward_func=model,
        inputs=x,
        attributions=attr,
        target=None,  # the predicted class
        attribute_func=Saliency(model).attribute,
        masks=masks,
        patch_size=4,
        grid=(x, torch.tensor([0, 1]), cells),
        model=model,
        method_factory=lambda m: Saliency(m).attribute,
    )
    for name in list_metrics():
        spec = get_metric(name)
        out = spec.compute(ctx)
        assert list(out.values) == list(spec.columns), name
        for v in out.values.values():
            assert v.shape == (2,), name
    gpg = get_metric("grid_pointing_game").compute(ctx).values["grid_pointing"]
    expected = Saliency(model).attribute(x, target=torch.tensor([0, 1]))
    assert torch.equal(gpg, M.grid_pointing_game(expected, cells))


def test_missing_needs_are_named(batch):
    model, x, attr, _ = batch
    ctx = MetricContext(forward_func=model, inputs=x, attributions=attr)
    with pytest.raises(ValueError, match=r"needs masks: give MetricContext.masks"):
        get_metric("pointing_game").compute(ctx)
    with pytest.raises(ValueError, match="needs attribute"):
        get_metric("sensitivity_max").compute(ctx)
    with pytest.raises(ValueError, match="needs grid"):
        get_metric("grid_pointing_game").compute(ctx)


def test_register_a_metric_by_decorator_and_by_spec(registry, batch):
    model, x, attr, _ = batch

    @register_metric(name="peak", columns={"peak": True}, description="largest value")
    def peak(ctx, scale=1.0):
        return {"peak": ctx.attributions.flatten(1).amax(dim=1) * scale}

    assert list_metrics()[-1] == "peak" and get_metric("peak").title == "Peak"
    ctx = MetricContext(forward_func=model, inputs=x, attributions=attr)
    out = get_metric("peak").compute(ctx, scale=2.0)
    assert isinstance(out, MetricOutput) and out.curve is None
    assert torch.equal(out.values["peak"], attr.flatten(1).amax(1) * 2)
    # replacing keeps the place in the table
    register_metric(MetricSpec("deletion", {"d": False}, (), lambda c: {"x": c}, "d"))
    assert list_metrics()[0] == "deletion"
    with pytest.raises(ValueError, match="returned columns"):
        get_metric("deletion").compute(ctx)
    with pytest.raises(ValueError, match="unknown needs"):
        register_metric(MetricSpec("bad", {"b": True}, ("labels",), peak, ""))
    with pytest.raises(ValueError, match="bools"):
        register_metric(MetricSpec("bad", {"b": "higher"}, (), peak, ""))
    with pytest.raises(TypeError, match="name= and columns="):
        register_metric(name="bad")


def _documented():
    """``name -> (columns, better, needs)`` of the registry's table in the docs."""
    text = DOCS.read_text()
    table = text.split(".. list-table:: The registered metrics")[1].split("\n\n.. ")[0]
    rows = {}
    for row in table.split("   * - ")[2:]:
        cells = [c.strip() for c in row.split("\n     - ")]
        rows[cells[0].strip("`")] = (
            re.findall(r"``([^`]+)``", cells[2]),
            cells[3],
            [] if cells[4] == "--" else [n.strip() for n in cells[4].split(",")],
            cells[1],
        )
    return rows


def _in_readme():
    """``name -> (title, better)`` of the metric table of the README's Evaluation
    section (rows ``| Title [name] | function | better | paper |``)."""
    section = README.read_text().split("\n## Evaluation\n")[1].split("\n## ")[0]
    rows = {}
    for line in section.splitlines():
        cells = line[2:-2].split(" | ") if line.startswith("| ") else []
        match = re.fullmatch(r"(.+) \[(\w+)\]", cells[0]) if cells else None
        if match:
            rows[match.group(2)] = (match.group(1), cells[2])
    return rows


def _check_row(name, title, better):
    """A documented row names the registry's title and better direction(s)."""
    spec = get_metric(name)
    assert title == spec.title, name
    betters = [b.strip() for b in better.split(",")]  # one, or one per column
    if len(betters) == 1:
        betters = betters * len(spec.columns)
    assert betters == [spec.better(c) for c in spec.columns], name


def test_every_registered_metric_is_documented():
    docs, readme = _documented(), _in_readme()
    assert list(docs) == list_metrics()
    assert list(readme) == list_metrics(), "README.md's Evaluation table"
    for name, (columns, better, needs, title) in docs.items():
        _check_row(name, title, better)
        spec = get_metric(name)
        assert columns == list(spec.columns), name
        assert needs == list(spec.needs), name
    for name, (title, better) in readme.items():
        _check_row(name, title, better)
