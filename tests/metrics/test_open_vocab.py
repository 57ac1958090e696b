"""Open-vocabulary localisation metrics (issue 14): (image, object) pairs of
multi-object scenes, the thresholded IoU against one object's mask, and the
registered metrics (IoU, deletion/insertion on the similarity score)."""

from __future__ import annotations

import pytest
import torch

from captum_vit.data import SyntheticScenes
from captum_vit.metrics import (
    MetricContext,
    deletion_auc,
    get_metric,
    insertion_auc,
    object_pairs,
    threshold_iou,
)


@pytest.fixture(scope="module")
def scenes():
    batch = next(iter(torch.utils.data.DataLoader(SyntheticScenes(6, seed=3), 6)))
    labels = torch.where(batch.shapes >= 0, batch.shapes * 8 + batch.colours, -1)
    return batch, labels


def test_object_pairs(scenes):
    batch, labels = scenes
    pairs = object_pairs(batch.image, labels, batch.masks)
    M = int((labels >= 0).sum())
    assert pairs.images.shape == (M, 3, 64, 64) and pairs.masks.shape == (M, 64, 64)
    for m in range(M):
        i, k = int(pairs.index[m]), int(pairs.slot[m])
        assert torch.equal(pairs.images[m], batch.image[i])
        assert torch.equal(pairs.masks[m], batch.masks[i, k])
        assert int(pairs.target[m]) == int(batch.shapes[i, k] * 8 + batch.colours[i, k])
    # image-major, slot order
    order = (pairs.index * 10 + pairs.slot).tolist()
    assert order == sorted(order)
    with pytest.raises(ValueError, match="expected images"):
        object_pairs(batch.image, labels[0], batch.masks)


def test_threshold_iou_by_hand():
    a = torch.tensor([[[0.0, 1.0], [0.2, 0.9]], [[3.0, 3.0], [3.0, 3.0]]])
    m = torch.tensor([[[0, 1], [1, 1]], [[1, 0], [0, 0]]])
    # min-max, >= 0.5: {(0,1), (1,1)} vs {(0,1), (1,0), (1,1)}: 2 / 3; a
    # constant map predicts nothing: 0
    torch.testing.assert_close(threshold_iou(a, m), torch.tensor([2 / 3, 0.0]))
    # the threshold; an empty mask is NaN
    torch.testing.assert_close(threshold_iou(a[:1], m[:1], 0.1), torch.tensor([1.0]))
    assert threshold_iou(a[:1], torch.zeros(1, 2, 2)).isnan().all()
    # a token grid is upsampled to the mask's size; channels are summed
    grid = torch.zeros(1, 2, 2)
    grid[0, 0, 0] = 1.0
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, :4, :4] = True
    assert threshold_iou(grid, mask, 0.5) > 0.2
    pixels = torch.zeros(1, 3, 8, 8)
    pixels[0, :, :4, :4] = 1.0
    torch.testing.assert_close(threshold_iou(pixels, mask), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="threshold"):
        threshold_iou(pixels, mask, 1.5)


def test_registered_metrics():
    """``open_vocab_iou`` is :func:`threshold_iou`; the similarity deletion
    and insertion are the curve metrics on the raw output (no softmax)."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.randn(2, 3, 8, 8, generator=g)
    attr = torch.randn(2, 3, 8, 8, generator=g)
    masks = torch.rand(2, 8, 8, generator=g) > 0.5
    ctx = MetricContext(model, x, attr, target=[1, 3], masks=masks, patch_size=2)
    out = get_metric("open_vocab_iou").compute(ctx)
    torch.testing.assert_close(out.values["ov_iou"], threshold_iou(attr, masks))
    for name, fn, col in (
        ("similarity_deletion", deletion_auc, "sim_deletion_auc"),
        ("similarity_insertion", insertion_auc, "sim_insertion_auc"),
    ):
        out = get_metric(name).compute(ctx)
        expected = fn(model, x, attr, [1, 3], patch_size=2, apply_softmax=False)
        torch.testing.assert_close(out.values[col], expected.auc)
        # the unperturbed point of the curve is the raw score
        with torch.no_grad():
            raw = model(x)[[0, 1], [1, 3]]
        if name == "similarity_deletion":
            torch.testing.assert_close(out.curve.curve[:, 0], raw)
        softmax = fn(model, x, attr, [1, 3], patch_size=2)
        assert not torch.allclose(out.values[col], softmax.auc)
    assert get_metric("similarity_deletion").better() == "lower"
    assert get_metric("similarity_insertion").better() == "higher"
