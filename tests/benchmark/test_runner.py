"""The benchmark runner: aggregation, formats, batching independence, datasets."""

import math
import pickle

import numpy as np
import pytest
import torch
from captum.attr import Saliency

from captum_vit.benchmark import (
    BenchmarkResult,
    get_metric,
    list_metrics,
    load_model,
    make_dataset,
    run_benchmark,
)
from tests.benchmark._tiny import write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


def _result():
    values = {
        "a": {"x": [1.0, 2.0, float("nan")], "y": [0.5, 0.5, 0.5]},
        "b": {"x": [0.0, 0.0, 3.0], "y": [0.25, 0.75, 1.0]},
    }
    return BenchmarkResult(
        ["a", "b"], ["x", "y"], {"x": True, "y": False}, [0, 1, 2], values, [True] * 3
    )


def test_table_is_the_mean_over_samples_without_nan():
    tab = _result().table()
    assert tab["a"]["x"] == 1.5 and tab["b"]["x"] == 1.0
    assert tab["a"]["y"] == 0.5 and tab["b"]["y"] == pytest.approx(2.0 / 3.0)


def test_markdown_marks_direction_and_best_and_csv_keeps_precision():
    res = _result()
    md = res.to_markdown(digits=2).splitlines()
    assert md[0] == "| method | x ↑ | y ↓ |"
    assert md[2] == "| a | **1.50** | **0.50** |"
    assert md[3] == "| b | 1.00 | 0.67 |"
    csv = res.to_csv().splitlines()
    assert csv[0] == "method,x,y"
    assert csv[2] == f"b,1.0,{repr(2.0 / 3.0)}"
    per = res.per_sample_csv().splitlines()
    assert per[0] == "index,method,x,y" and per[3] == "2,a,nan,0.5"


def test_save_writes_table_and_one_bar_chart_per_column(tmp_path):
    files = _result().save(str(tmp_path))
    assert (tmp_path / "table.md").read_text() == _result().to_markdown()
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["x.png", "y.png"]
    board = sorted(p.name for p in (tmp_path / "leaderboard").iterdir())
    assert board == ["heatmap.png", "ranks.png"]
    assert files["csv"].endswith("table.csv")
    assert (tmp_path / "leaderboard.md").read_text() == (
        _result().leaderboard().to_markdown()
    )


def test_metric_registry():
    assert list_metrics()[:2] == ["deletion", "insertion"]
    assert get_metric("segmentation").columns["seg_miou"] is True
    assert get_metric("positive_perturbation").columns["pos_perturbation_auc"] is False
    with pytest.raises(ValueError, match="available"):
        get_metric("nope")


def test_per_sample_results_do_not_depend_on_batch_size(tiny):
    ds = make_dataset("synthetic", None, 32, tiny.transform, limit=6)
    kw = dict(
        methods=["rollout"],
        metrics=["positive_perturbation", "segmentation", "pointing_game"],
        mean=tiny.mean,
        std=tiny.std,
        show_progress=False,
    )
    r2 = run_benchmark(tiny.model, ds, batch_size=2, **kw)
    r6 = run_benchmark(tiny.model, ds, batch_size=6, **kw)
    assert r2.indices == r6.indices == list(range(6))
    for c in r2.columns:
        np.testing.assert_allclose(
            r2.values["rollout"][c], r6.values["rollout"][c], atol=1e-6, err_msg=c
        )


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require")
def test_grid_metric_and_any_captum_method(tiny):
    ds = make_dataset("synthetic", None, 32, tiny.transform, limit=2)
    res = run_benchmark(
        tiny.model,
        ds,
        {"saliency": Saliency},  # any Captum Attribution through a factory
        ["grid_pointing_game", "iou", "complexity"],
        tiny.mean,
        tiny.std,
        show_progress=False,
    )
    assert res.methods == ["saliency"]
    assert res.columns == ["grid_pointing", "iou", "complexity"]
    assert all(0.0 <= v <= 1.0 for v in res.values["saliency"]["grid_pointing"])


def _write_cifar(folder, n=3):
    rng = np.random.default_rng(0)
    batch = {
        b"labels": [int(v) for v in rng.integers(0, 8, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
    }
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)


def test_cifar10_dataset_has_no_mask_metrics(tiny, tmp_path):
    _write_cifar(tmp_path)
    ds = make_dataset("cifar10", str(tmp_path), 32, tiny.transform)
    assert len(ds) == 3 and not ds.has_masks and ds.grid is None
    res = run_benchmark(
        tiny.model,
        ds,
        ["raw_attention"],
        ["deletion", "faithfulness_correlation"],
        tiny.mean,
        tiny.std,
        show_progress=False,
    )
    assert res.n == 3
    assert all(math.isfinite(v) for v in res.values["raw_attention"]["deletion_auc"])
    with pytest.raises(ValueError, match="needs masks"):
        run_benchmark(tiny.model, ds, ["raw_attention"], ["pointing_game"])


def test_make_dataset_errors():
    with pytest.raises(ValueError, match="unknown dataset"):
        make_dataset("mnist")
    with pytest.raises(ValueError, match="needs a PATH"):
        make_dataset("imagenet")
    with pytest.raises(ValueError, match="no path"):
        make_dataset("synthetic", "x")


def test_model_is_left_as_it_was(tiny):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    ds = make_dataset("synthetic", None, 32, tiny.transform, limit=2)
    run_benchmark(tiny.model, ds, ["grad_sam"], ["deletion"], show_progress=False)
    assert not tiny.model.training
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
