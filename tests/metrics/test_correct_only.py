"""``correct_only=True`` restricts the perturbation and segmentation tests to the
correctly classified images (Transformer-Explainability #44)."""

import math

import pytest
import torch

from captum_vit.metrics import (
    MetricContext,
    get_metric,
    list_metrics,
    perturbation_test,
    segmentation_test,
    summarize_segmentation,
)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.randn(6, 3, 8, 8, generator=g)
    with torch.no_grad():
        pred = model(x).argmax(1)
    labels = pred.clone()
    labels[[1, 4]] = (pred[[1, 4]] + 1) % 4  # two misclassified images
    attr = torch.rand(6, 8, 8, generator=g)
    masks = torch.rand(6, 8, 8, generator=g) > 0.6
    return model, x, labels, attr, masks


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_perturbation_test_keeps_the_correct_images(batch, mode):
    model, x, labels, attr, _ = batch
    full = perturbation_test(model, x, attr, labels, mode=mode)
    only = perturbation_test(model, x, attr, labels, mode=mode, correct_only=True)
    wrong = torch.tensor([False, True, False, False, True, False])
    assert torch.isnan(only.auc[wrong]).all() and torch.isnan(only.curve[wrong]).all()
    torch.testing.assert_close(only.auc[~wrong], full.auc[~wrong])
    assert (full.curve[wrong, 0] == 0).all()  # the default counts them as wrong
    assert only.auc.nanmean() == pytest.approx(full.auc[~wrong].mean().item())


def test_segmentation_test_keeps_the_correct_images(batch):
    model, x, labels, attr, masks = batch
    full = segmentation_test(attr, masks)
    only = segmentation_test(
        attr, masks, correct_only=True, forward_func=model, inputs=x, target=labels
    )
    keep = torch.tensor([True, False, True, True, False, True])
    for name in ("pixel_accuracy", "miou", "ap", "f1"):
        got, want = getattr(only, name), getattr(full, name)
        assert torch.isnan(got[~keep]).all(), name
        torch.testing.assert_close(got[keep], want[keep])
    assert (only.labeled[~keep] == 0).all() and (only.union[~keep] == 0).all()
    subset = segmentation_test(attr[keep], masks[keep])
    pooled, want = summarize_segmentation([only]), summarize_segmentation([subset])
    assert pooled == pytest.approx(want)
    with pytest.raises(ValueError, match="needs forward_func"):
        segmentation_test(attr, masks, correct_only=True)


def test_registry_flags_and_options(batch):
    model, x, labels, attr, masks = batch
    flagged = [n for n in list_metrics() if get_metric(n).correct_only]
    assert flagged == ["positive_perturbation", "negative_perturbation", "segmentation"]
    ctx = MetricContext(
        forward_func=model, inputs=x, attributions=attr, target=labels, masks=masks
    )
    keep = torch.tensor([True, False, True, True, False, True])
    for name in flagged:
        full = get_metric(name).compute(ctx).values
        only = get_metric(name).compute(ctx, correct_only=True).values
        for col in full:
            assert all(math.isnan(v) for v in only[col][~keep].tolist()), col
            torch.testing.assert_close(only[col][keep], full[col][keep])
