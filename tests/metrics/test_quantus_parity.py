"""Equality with Quantus 0.6.0 on the same inputs.

The reference numbers are frozen in ``data/quantus_reference.npz``, produced by
``data/make_quantus_reference.py`` (quantus 0.6.0 in a scratch venv, torch 2.14.1,
numpy 2.4.6; calls: ``PointingGame(abs=False, normalise=False)``,
``EffectiveComplexity(eps=0.5, abs=True, normalise=False)``,
``FaithfulnessCorrelation(nr_runs=10, subset_size=8, perturb_baseline=0.0,
abs=False, normalise=False, return_aggregate=False)(softmax=False)`` with its
``np.random.choice`` subsets recorded, ``PixelFlipping(features_in_step=4,
perturb_baseline=0.0, abs=False, normalise=False)(softmax=True)`` with and without
``return_auc_per_sample``, ``RegionPerturbation(patch_size=2, order="morf",
regions_evaluation=16, perturb_baseline=0.0, abs=False, normalise=False)
(softmax=True)``). The inputs and the model weights are stored in the same file.

Quantus' ``SensitivityN`` is not compared: version 0.6.0 computes another quantity
than Ancona et al.'s (cumulative removal in attribution order, correlation across the
images of the batch per step); ``test_faithfulness.py`` checks our sensitivity-n by
hand instead.
"""

import os

import numpy as np
import pytest
import torch

from captum_vit.metrics import (
    deletion_auc,
    effective_complexity,
    faithfulness_correlation,
    pointing_game,
)
from tests.tolerance import assert_close_to_scale

DATA = os.path.join(os.path.dirname(__file__), "data", "quantus_reference.npz")


@pytest.fixture(scope="module")
def ref():
    d = dict(np.load(DATA))
    H, W = d["x"].shape[-2:]
    K = d["w2"].shape[0]
    m = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(H * W, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, K),
    )
    with torch.no_grad():
        m[1].weight.copy_(torch.from_numpy(d["w1"]))
        m[1].bias.copy_(torch.from_numpy(d["b1"]))
        m[3].weight.copy_(torch.from_numpy(d["w2"]))
        m[3].bias.copy_(torch.from_numpy(d["b2"]))
    d["model"] = m.eval()
    for k in ("x", "a", "s", "y"):
        d[k] = torch.from_numpy(d[k])
    return d


def test_pointing_game_matches_quantus(ref):
    ours = pointing_game(ref["a"], masks=ref["s"])
    np.testing.assert_array_equal(ours.numpy(), ref["pointing"])
    assert ref["pointing"].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_effective_complexity_matches_quantus(ref):
    ours = effective_complexity(ref["a"], eps=0.5, normalize=False)
    np.testing.assert_array_equal(ours.numpy(), ref["complexity"])


def test_faithfulness_correlation_matches_quantus_with_fixed_subsets(ref):
    subsets = torch.from_numpy(ref["subsets"]).long()  # (B, runs, size)
    ours = faithfulness_correlation(
        ref["model"],
        ref["x"],
        ref["a"],
        target=ref["y"],
        subsets=subsets,
        baseline=0.0,
        apply_softmax=False,
    )
    assert_close_to_scale(ours, ref["faith"], 1e-4)


def test_pixel_flipping_equals_deletion_curve(ref):
    res = deletion_auc(
        ref["model"], ref["x"], ref["a"], target=ref["y"], baseline=0.0, step_size=4
    )
    # Quantus' curve omits the unperturbed point; ours starts with it.
    assert_close_to_scale(res.curve[:, 1:], ref["pixel_flipping"], 1e-4)
    # Quantus' AUC: trapezoid with dx=1 over those points (ours: over fractions).
    quantus_style = np.trapezoid(res.curve[:, 1:].double().numpy(), dx=1.0, axis=1)
    np.testing.assert_allclose(quantus_style, ref["pixel_flipping_auc"], rtol=1e-4)


def test_region_perturbation_equals_patch_deletion(ref):
    res = deletion_auc(
        ref["model"],
        ref["x"],
        ref["a"],
        target=ref["y"],
        baseline=0.0,
        patch_size=2,
        step_size=1,
    )
    deltas = res.curve[:, :1] - res.curve[:, 1:]
    assert_close_to_scale(deltas, ref["region"], 1e-4)
