"""The leaderboard (intervals, best, paired comparisons, ranks, formats, plots),
the sanity baselines, the runner's repeats / limits / options, and a
small-sample run of ``benchmarks/leaderboard.py``."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch
from scipy.ndimage import sobel

from captum_vit.benchmark import (
    BenchmarkResult,
    EdgeMap,
    RandomMap,
    create_baseline,
    list_baselines,
    load_model,
    make_dataset,
    paired_bootstrap,
    run_benchmark,
)
from captum_vit.metrics import MetricContext, get_metric
from tests.benchmark._tiny import write_tiny_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


def _result(correct=None):
    rng = np.random.default_rng(0)
    n = 40
    good = rng.normal(1.0, 0.2, n)
    values = {
        "good": {"x": good.tolist(), "y": (-good).tolist()},
        "close": {"x": (good - 0.01).tolist(), "y": (-good + 0.5).tolist()},
        "bad": {"x": (good - 1).tolist(), "y": [float("nan")] * n},
    }
    return BenchmarkResult(
        ["good", "close", "bad"],
        ["x", "y"],
        {"x": True, "y": False},
        list(range(n)),
        values,
        correct if correct is not None else [True] * n,
        correct_columns=["x"],
        baselines=["bad"],
    )


def test_leaderboard_best_comparisons_and_ranks():
    res = _result(correct=[i % 2 == 0 for i in range(40)])
    board = res.leaderboard()
    assert board.columns == ["x", "y", "x@correct"]
    assert board.best == {"x": "good", "y": "good", "x@correct": "good"}
    e = board.entries["x"]
    assert e["good"].mean == pytest.approx(np.mean(res.values["good"]["x"]))
    assert e["good"].low < e["good"].mean < e["good"].high
    assert math.isnan(e["good"].p_value) and e["good"].rank == 1
    # "close" is 0.01 below on every sample: a consistent, significant loss
    assert e["close"].losses == 40 and e["close"].p_value < 0.05
    assert e["close"].diff == pytest.approx(-0.01)
    want = paired_bootstrap(
        np.array(res.values["close"]["x"]), np.array(res.values["good"]["x"]), True
    )
    assert e["close"].p_value == pytest.approx(want.p_value)
    assert e["bad"].rank == 3 and math.isnan(board.entries["y"]["bad"].mean)
    assert board.entries["x@correct"]["good"].n == 20
    assert board.mean_ranks() == {"good": 1.0, "close": 2.0, "bad": 3.0}
    md = board.to_markdown().splitlines()
    assert md[0].startswith("| method | x ↑ | y ↓ | x@correct ↑ |")
    assert md[2].startswith("| good | **") and md[4].startswith("| *bad* |")
    assert "| -- |" in md[4]
    csv = board.to_csv().splitlines()
    assert csv[0].startswith("method,baseline,column,higher_is_better,best,mean,low")
    assert len(csv) == 1 + 3 * 3


def test_not_significantly_different_is_marked():
    rng = np.random.default_rng(3)
    a = rng.normal(size=30)
    b = a + rng.normal(0, 1, size=30) * 0.5 + 0.01  # noisy, same mean
    res = BenchmarkResult(
        ["a", "b"],
        ["x"],
        {"x": True},
        list(range(30)),
        {"a": {"x": a.tolist()}, "b": {"x": b.tolist()}},
        [True] * 30,
    )
    board = res.leaderboard()
    loser = "a" if board.best["x"] == "b" else "b"
    assert board.tied_with_best("x", loser)
    assert (
        " †"
        in [ln for ln in board.to_markdown().splitlines() if f"| {loser} |" in ln][0]
    )


def test_plots_are_written(tmp_path):
    files = _result().leaderboard().save(str(tmp_path))
    for key in ("heatmap", "ranks"):
        assert os.path.getsize(files[key]) > 1000
    assert (tmp_path / "leaderboard_wide.csv").read_text().startswith('method,"x ↑"')


def test_random_map_is_seeded_per_sample_and_patchwise(tiny):
    x = torch.randn(3, 3, 32, 32)
    rm = RandomMap(tiny.model, seed=1)
    full = rm.attribute(x)
    assert full.shape == x.shape
    torch.testing.assert_close(rm.attribute(x[1:2]), full[1:2])  # batch-free
    assert not torch.equal(RandomMap(tiny.model, seed=2).attribute(x), full)
    patch = full[0, 0].reshape(4, 8, 4, 8)  # constant on each 8 x 8 patch
    assert torch.equal(patch, patch[:, :1, :, :1].expand_as(patch))
    (as_tuple,) = rm.attribute((x,))
    assert torch.equal(as_tuple, full)


def test_edge_map_is_the_sobel_magnitude(tiny):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    got = EdgeMap(tiny.model).attribute(x)
    xn = x.numpy()
    for b in range(2):  # the Sobel magnitude of each channel image, summed
        want = sum(
            np.hypot(sobel(xn[b, c], axis=1), sobel(xn[b, c], axis=0)) for c in range(3)
        )
        np.testing.assert_allclose(got[b, 0].numpy(), want)
    # a vertical step edge: the map peaks on the edge columns only
    step = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    step[..., 4:] = 1.0
    cols = EdgeMap(tiny.model).attribute(step)[0, 0].sum(0)
    assert cols.argmax() in (3, 4) and cols[0] == 0 and cols[-1] == 0
    assert torch.equal(got[:, 0], got[:, 2])


def test_baseline_registry_and_randomised_model(tiny):
    assert list_baselines() == ["random_map", "edge_map"]
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    rnd = create_baseline("randomised_model:rollout", tiny.model, seed=0)
    x = torch.randn(2, 3, 32, 32)
    a = rnd.attribute(x, target=0)
    assert a.shape == x.shape
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())
    with pytest.raises(ValueError, match="unknown baseline"):
        create_baseline("nope", tiny.model)
    with pytest.raises(ValueError, match="unknown method"):
        create_baseline("randomised_model:nope", tiny.model)


def test_runner_repeats_limits_options_and_correct_only(tiny):
    ds = make_dataset("synthetic", None, 32, tiny.transform, limit=4)
    res = run_benchmark(
        tiny.model,
        ds,
        ["rollout", "random_map"],
        ["deletion", "faithfulness_correlation", "positive_perturbation", "saco"],
        tiny.mean,
        tiny.std,
        batch_size=2,
        show_progress=False,
        seeds=[0, 1],
        limits={"saco": 2},
        metric_options={"deletion": {"n_steps": 4}},
    )
    assert res.seeds == [0, 1] and res.baselines == ["random_map"]
    rep = res.repeats["rollout"]
    # deterministic metrics computed once, seeded ones per seed
    assert all(a == b for a, b in rep["deletion_auc"])
    assert any(a != b for a, b in rep["faithfulness_corr"])
    assert any(a != b for a, b in res.repeats["random_map"]["deletion_auc"])
    assert res.values["rollout"]["faithfulness_corr"][0] == pytest.approx(
        np.mean(rep["faithfulness_corr"][0])
    )
    # limits: NaN past the first 2 samples
    saco = res.values["rollout"]["saco"]
    assert all(math.isfinite(v) for v in saco[:2]) and all(map(math.isnan, saco[2:]))
    # the options reached the metric: 4 steps
    batch = ds.load([0, 1])
    a = run_benchmark(
        tiny.model,
        ds,
        ["rollout"],
        ["deletion"],
        tiny.mean,
        tiny.std,
        batch_size=2,
        show_progress=False,
        metric_options={"deletion": {"n_steps": 4}},
    )
    from captum_vit.attr import create_method

    x, y = batch["images"], batch["labels"]
    m = create_method("rollout", tiny.model)
    ctx = MetricContext(
        forward_func=tiny.model,
        inputs=x,
        attributions=m.attribute(x, target=y),
        target=y,
        patch_size=8,
    )
    want = get_metric("deletion").compute(ctx, n_steps=4).values["deletion_auc"]
    np.testing.assert_allclose(a.values["rollout"]["deletion_auc"][:2], want, rtol=1e-6)
    # correct_only aggregate = the metric computed with correct_only=True
    assert res.correct_columns == ["pos_perturbation_auc"]
    out = (
        get_metric("positive_perturbation")
        .compute(ctx._replace(mean=tiny.mean, std=tiny.std), correct_only=True)
        .values["pos_perturbation_auc"]
    )
    mask = [math.isfinite(v) for v in out.tolist()]
    assert mask == res.correct[:2]
    seeds = res.seconds["rollout"]
    assert set(seeds) == {
        "attribute",
        "deletion",
        "faithfulness_correlation",
        "positive_perturbation",
        "saco",
    }
    with pytest.raises(ValueError, match="limits"):
        run_benchmark(tiny.model, ds, ["rollout"], ["deletion"], limits={"saco": 2})
    with pytest.raises(ValueError, match="seeds"):
        run_benchmark(tiny.model, ds, ["rollout"], ["deletion"], seeds=[1, 1])


def test_randomised_model_maps_score_worse_on_the_embedded_model():
    """Adebayo et al.'s sanity check on the embedded model: the map of a fully
    re-initialised copy is worse than the trained model's on faithfulness and
    localisation (16 images)."""
    lm = load_model()
    ds = make_dataset("synthetic", None, lm.image_size, lm.transform, 16)
    res = run_benchmark(
        lm.model,
        ds,
        ["generic_attention", "randomised_model:generic_attention"],
        ["positive_perturbation", "segmentation", "saco"],
        lm.mean,
        lm.std,
        show_progress=False,
    )
    board = res.leaderboard()
    for col in ("pos_perturbation_auc", "seg_miou", "saco"):
        assert board.best[col] == "generic_attention", col
        worse = board.entries[col]["randomised_model:generic_attention"]
        assert worse.p_value < 0.05, col


def test_small_leaderboard_run(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "leaderboard", os.path.join(ROOT, "benchmarks", "leaderboard.py")
    )
    lb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lb)
    out = tmp_path / "lb"
    threads = torch.get_num_threads()
    try:
        lb.main([
            "--samples", "2", "--batch-size", "2", "--attribute-samples", "2",
            "--methods", "rollout", "transformer_lrp", "partial_lrp",
            "--metrics", "saco", "segmentation", "model_randomisation",
            "--out", str(out), "--no-progress",
        ])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    folder = out / "synthetic_vit"
    run = json.loads((folder / "run.json").read_text())
    assert run["n"] == 2 and run["wall_seconds"] > 0
    assert run["leaderboard"]["methods"] == [
        "rollout", "transformer_lrp", "partial_lrp", "random_map", "edge_map",
        "randomised_model:generic_attention",
    ]  # fmt: skip
    assert {"rand_spearman", "rand_ssim", "saco"} <= set(run["leaderboard"]["columns"])
    # a model-independent map is as similar as can be on every randomised copy
    assert run["leaderboard"]["entries"]["rand_spearman"]["edge_map"][0] == 1.0
    text = (out / "leaderboard.inc").read_text()
    assert text.startswith("synthetic_vit\n-------------")
    assert "Wall time" in text and "randomisation.png" in text
    assert (folder / "randomisation.png").exists() and (
        folder / "orderings.csv"
    ).exists()


def test_command_line_repeats_baselines_and_limits(tmp_path, capsys):
    from captum_vit.cli import main

    ckpt = write_tiny_checkpoint(tmp_path)
    out = tmp_path / "bench"
    argv = ["benchmark", "--model", ckpt, "--limit", "4", "--batch-size", "2"]
    argv += ["--methods", "rollout", "--baselines", "random_map", "--repeat", "2"]
    argv += ["--metrics", "saco", "faithfulness_correlation", "--metric-limit"]
    argv += ["saco=2", "--no-progress", "--no-plots", "--out", str(out)]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    board = (out / "leaderboard.md").read_text()
    assert board in printed and "| *random_map* |" in board
    assert "seeds 0, 1" in board
    rows = (out / "per_sample.csv").read_text().splitlines()
    assert rows[0] == (
        "index,method,saco,faithfulness_corr,saco@seed0,saco@seed1,"
        "faithfulness_corr@seed0,faithfulness_corr@seed1"
    )
    assert [r.split(",")[1] for r in rows[1:]] == ["rollout"] * 4 + ["random_map"] * 4
    assert rows[3].split(",")[2] == "nan"  # saco on the first 2 samples only
