import math

import numpy as np
import pytest
import torch

from captum_vit.metrics import (
    grid_pointing_game,
    iou_test,
    make_grid_images,
    pointing_game,
    segmentation_test,
    summarize_segmentation,
)


def _peak():
    a = torch.zeros(1, 4, 4)
    a[0, 1, 2] = 1.0
    return a


def test_pointing_game_by_hand_with_tolerance():
    a = _peak()
    assert pointing_game(a, boxes=torch.tensor([[2, 0, 4, 2]])).tolist() == [1.0]
    far = torch.tensor([[0, 2, 2, 4]])  # nearest pixel (2, 1): distance sqrt(2)
    assert pointing_game(a, boxes=far).tolist() == [0.0]
    assert pointing_game(a, boxes=far, tolerance=1).tolist() == [0.0]
    assert pointing_game(a, boxes=far, tolerance=2).tolist() == [1.0]
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert math.isnan(pointing_game(a, masks=empty).item())


def test_pointing_game_token_grid_needs_image_size():
    grid = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])  # top-right token
    box = torch.tensor([[4, 0, 8, 4]])
    assert pointing_game(grid, boxes=box, image_size=(8, 8)).tolist() == [1.0]
    masks = torch.zeros(1, 8, 8)
    masks[0, 4:, :4] = 1
    assert pointing_game(grid, masks=masks).tolist() == [0.0]


def test_iou_test_by_hand():
    a = torch.full((1, 4, 4), 0.1)
    a[0, :2, :2] = 1.0
    gt = torch.tensor([[0, 0, 2, 2]])
    assert iou_test(a, boxes=gt).tolist() == [1.0]
    assert iou_test(a, boxes=torch.tensor([[0, 0, 2, 4]])).tolist() == [0.5]
    a[0, 3, 3] = 0.25  # (0.25 - 0.1) / 0.9 < 0.2: dropped
    assert iou_test(a, boxes=gt).tolist() == [1.0]
    a[0, 3, 3] = 0.3  # (0.3 - 0.1) / 0.9 >= 0.2: the box grows to the whole image
    iou, boxes = iou_test(a, boxes=gt, return_boxes=True)
    assert iou.tolist() == [0.25]
    assert boxes.tolist() == [[0.0, 0.0, 4.0, 4.0]]
    assert iou_test(torch.ones(1, 4, 4), boxes=gt).tolist() == [0.0]
    m = torch.zeros(1, 4, 4)
    m[0, :2, :2] = 1
    assert iou_test(a, masks=m).tolist() == [0.25]


def test_grid_pointing_game_by_hand():
    a = torch.zeros(1, 4, 4)
    a[0, :2, 2:] = 1.0  # cell 1
    a[0, 3, 0] = 1.0  # cell 2
    a[0, 0, 0] = -5.0  # negative attribution is ignored
    assert grid_pointing_game(a, torch.tensor([1])).tolist() == [pytest.approx(0.8)]
    assert grid_pointing_game(a, torch.tensor([2])).tolist() == [pytest.approx(0.2)]
    assert grid_pointing_game(-a.clamp(min=0), torch.tensor([1])).tolist() == [0.0]
    g = grid_pointing_game(torch.ones(1, 3, 6, 6), torch.tensor([0]), grid=(3, 3))
    assert g.item() == pytest.approx(1 / 9)


def test_make_grid_images():
    x = torch.rand(12, 3, 8, 8)
    y = torch.arange(12) % 5
    g = make_grid_images(x, y, grid=(2, 2), seed=0, resize=False)
    assert g.images.shape == (3, 3, 16, 16)
    for i in range(3):
        labs = y[g.indices[i]]
        assert labs.unique().numel() == 4
        assert g.targets[i] == labs[g.target_cell[i]]
        # cell (r, c) of the grid is the source image
        for cell in range(4):
            r, c = divmod(cell, 2)
            tile = g.images[i, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8]
            assert torch.equal(tile, x[g.indices[i, cell]])
    again = make_grid_images(x, y, grid=(2, 2), seed=0, resize=False)
    assert torch.equal(again.images, g.images)
    small = make_grid_images(x, y, seed=0)
    assert small.images.shape == (3, 3, 8, 8)
    with pytest.raises(ValueError, match="different classes"):
        make_grid_images(x, torch.zeros(12, dtype=torch.long))


def test_segmentation_test_by_hand():
    a = torch.tensor([[[0.0, 1.0], [0.2, 0.9]]])
    m = torch.tensor([[[0, 1], [0, 1]]])
    r = segmentation_test(a, m)
    assert r.pixel_accuracy.tolist() == [1.0]
    assert r.iou.tolist() == [[1.0, 1.0]]
    assert r.ap.tolist() == [1.0]
    assert r.f1.tolist() == [1.0]
    # mean of [0, 1, 0.7, 0.9] is 0.65: pixel (1, 0) becomes foreground, wrongly
    b = torch.tensor([[[0.0, 1.0], [0.7, 0.9]]])
    r = segmentation_test(b, m)
    assert r.pixel_accuracy.tolist() == [0.75]
    assert r.iou[0].tolist() == [pytest.approx(0.5), pytest.approx(2 / 3)]
    assert r.f1.item() == pytest.approx(0.8)


def test_segmentation_ap_f1_match_scikit_learn():
    # Frozen with scikit-learn 1.9.1 (scratch venv, see test_quantus_parity.py):
    # n = min-max(a); average_precision_score(cat(1 - m, m), cat(1 - n, n)) and
    # f1_score(m, n > n.mean()) on this map, which has ties on purpose.
    a = np.round(np.random.RandomState(3).rand(8, 8), 1)
    m = np.zeros((8, 8), dtype=np.int64)
    m[2:6, 1:5] = 1
    r = segmentation_test(torch.from_numpy(a)[None], torch.from_numpy(m)[None])
    assert r.ap.item() == pytest.approx(0.49765709282450354, rel=1e-6)
    assert r.f1.item() == pytest.approx(0.24489795918367346, rel=1e-6)


def test_segmentation_summary_is_dataset_level():
    a = torch.tensor([[[0.0, 1.0], [0.2, 0.9]]])
    m = torch.tensor([[[0, 1], [0, 1]]])
    b = torch.tensor([[[0.0, 1.0], [0.7, 0.9]]])
    s = summarize_segmentation([segmentation_test(a, m), segmentation_test(b, m)])
    assert s["pixel_accuracy"] == pytest.approx(7 / 8)
    # background: inter 2 + 1, union 2 + 2; foreground: 2 + 2, 2 + 3
    assert s["miou"] == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert s["mf1"] == pytest.approx((1 + 0.8) / 2)
    thr = segmentation_test(b, m, f1_thresholds=[0.5, 0.95])
    assert thr.f1.item() == pytest.approx((0.8 + 2 / 3) / 2)  # > 0.95 keeps (0, 1)


def test_oracle_beats_random_on_every_localisation_metric():
    g = torch.Generator().manual_seed(5)
    B, S = 16, 32
    boxes = []
    for _ in range(B):
        x0, y0 = torch.randint(0, 20, (2,), generator=g).tolist()
        w, h = torch.randint(6, 12, (2,), generator=g).tolist()
        boxes.append([x0, y0, x0 + w, y0 + h])
    boxes = torch.tensor(boxes)
    ys = torch.arange(S).view(1, S, 1)
    xs = torch.arange(S).view(1, 1, S)
    masks = (
        (xs >= boxes[:, 0, None, None])
        & (xs < boxes[:, 2, None, None])
        & (ys >= boxes[:, 1, None, None])
        & (ys < boxes[:, 3, None, None])
    )
    oracle = masks.float() + 0.01 * torch.rand(B, S, S, generator=g)
    rand = torch.rand(B, 1, S, S, generator=g)
    assert pointing_game(oracle, masks=masks).mean() == 1.0
    assert pointing_game(rand, masks=masks).mean() < 0.5
    assert iou_test(oracle, boxes=boxes).mean() == 1.0
    assert iou_test(rand, boxes=boxes).mean() < 0.5
    so, sr = segmentation_test(oracle, masks), segmentation_test(rand, masks)
    for field in ("pixel_accuracy", "miou", "ap", "f1"):
        assert getattr(so, field).mean() > getattr(sr, field).mean() + 0.2, field
    assert so.pixel_accuracy.min() == 1.0
    cells = torch.randint(0, 4, (B,), generator=g)
    cell_masks = torch.zeros(B, S, S)
    for i, c in enumerate(cells.tolist()):
        r, col = divmod(c, 2)
        cell_masks[i, 16 * r : 16 * r + 16, 16 * col : 16 * col + 16] = 1
    assert grid_pointing_game(cell_masks, cells).min() == 1.0
    assert grid_pointing_game(rand, cells).mean() < 0.4


def test_localisation_errors_are_value_errors():
    a = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        pointing_game(a)
    with pytest.raises(ValueError, match="exactly one"):
        iou_test(a, boxes=torch.zeros(2, 4), masks=torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="masks"):
        pointing_game(a, masks=torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="boxes"):
        iou_test(a, boxes=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(a, masks=torch.zeros(2, 8, 8), tolerance=-1)
    with pytest.raises(ValueError, match="threshold"):
        iou_test(a, boxes=torch.zeros(2, 4), threshold=2.0)
    with pytest.raises(ValueError, match="target_cell"):
        grid_pointing_game(a, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="divisible"):
        grid_pointing_game(a, torch.tensor([0, 1]), grid=(3, 3))
    with pytest.raises(ValueError, match="masks"):
        segmentation_test(a, torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="spatial size"):
        segmentation_test(torch.rand(2, 3, 3), torch.zeros(2, 8, 8))
