import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from captum_vit.data import (
    CLASS_NAMES,
    GridSample,
    Sample,
    SyntheticGrid,
    SyntheticObjects,
    box_from_mask,
    render_sample,
)


def test_same_seed_same_tensors_different_seed_different():
    a = SyntheticObjects(16, seed=3).tensors()
    b = SyntheticObjects(16, seed=3).tensors()
    c = SyntheticObjects(16, seed=4).tensors()
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a.image, c.image)
    assert not torch.equal(a.mask, c.mask)
    assert torch.equal(a.label, c.label)  # labels cycle through the classes


def test_sample_depends_only_on_seed_split_index():
    long = SyntheticObjects(40, seed=1)
    short = SyntheticObjects(5, seed=1)
    assert torch.equal(long[4].image, short[4].image)
    assert torch.equal(long[-1].image, long[39].image)
    other = SyntheticObjects(5, seed=1, split="train")
    assert not torch.equal(other[4].image, short[4].image)
    with pytest.raises(ValueError):
        SyntheticObjects(5, split="holdout")
    with pytest.raises(IndexError):
        short[5]


def test_sample_types_and_ranges():
    ds = SyntheticObjects(len(CLASS_NAMES) * 2, seed=0)
    s = ds[3]
    assert isinstance(s, Sample)
    assert s.image.shape == (3, 64, 64) and s.image.dtype == torch.float32
    assert s.mask.shape == (64, 64) and s.mask.dtype == torch.bool
    assert s.box.shape == (4,) and s.label == 3
    assert 0.0 <= s.image.min() and s.image.max() <= 1.0
    assert ds.classes == CLASS_NAMES and ds.num_classes >= 8
    labels = ds.tensors().label
    assert torch.equal(torch.bincount(labels), torch.full((len(CLASS_NAMES),), 2))


def test_masks_and_boxes_consistent_with_pixels():
    images, labels, masks, boxes = SyntheticObjects(64, seed=5).tensors()
    area = masks.float().mean(dim=(1, 2))
    assert (area > 0.03).all() and (area < 0.2).all()
    for img, mask, box in zip(images, masks, boxes):
        x0, y0, x1, y1 = box.long().tolist()
        assert mask[y0:y1, x0:x1].sum() == mask.sum()  # box holds the mask
        assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()  # tight
        assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
        # the target is flat-coloured (plus small noise): its pixels agree
        obj = img[:, mask]
        assert obj.std(dim=1).max() < 0.05
        # and it differs from the clutter right around it
        ring = torch.zeros_like(mask)
        ring[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2] = True
        ring &= ~mask
        ring[y0:y1, x0:x1] = False
        near = img[:, ring].mean(dim=1)
        assert (obj.mean(dim=1) - near).abs().max() > 0.2


def test_target_is_only_class_cue():
    # Redrawing the same sample with another label changes only target pixels:
    # clutter, distractors and target colour come from the same random draws.
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    img_a, mask_a = render_sample(rng_a, 0)
    img_b, mask_b = render_sample(rng_b, 4)
    assert (mask_a != mask_b).any()
    diff = np.abs(img_a - img_b).max(axis=0) > 0
    assert not diff[~(mask_a | mask_b)].any()


def test_default_collate_batches_samples():
    loader = DataLoader(SyntheticObjects(10, seed=0), batch_size=4)
    batch = next(iter(loader))
    assert isinstance(batch, Sample)
    assert batch.image.shape == (4, 3, 64, 64)
    assert batch.label.tolist() == [0, 1, 2, 3]
    assert batch.mask.shape == (4, 64, 64) and batch.box.shape == (4, 4)


def test_transform_applies_to_image_only():
    ds = SyntheticObjects(2, seed=0, transform=lambda x: x * 2 - 1)
    raw = SyntheticObjects(2, seed=0)
    assert torch.allclose(ds[1].image, raw[1].image * 2 - 1)
    assert torch.equal(ds[1].mask, raw[1].mask)


def test_image_size_scales_objects():
    s = SyntheticObjects(1, seed=0, image_size=32)[0]
    assert s.image.shape == (3, 32, 32) and s.mask.any()


def test_generates_fast():
    import time

    # CPU time, not wall time: the suite shares cores with other jobs
    start = time.process_time()
    SyntheticObjects(300, seed=0).tensors()
    assert time.process_time() - start < 5.0


def test_box_from_mask():
    m = torch.zeros(8, 8, dtype=torch.bool)
    m[2:4, 3:6] = True
    assert box_from_mask(m).tolist() == [3.0, 2.0, 6.0, 4.0]
    assert box_from_mask(torch.zeros(4, 4, dtype=torch.bool)).tolist() == [0.0] * 4


def test_grid():
    ds = SyntheticGrid(8, seed=2)
    cells = SyntheticGrid.cell_masks(64)
    assert cells.sum() == 64 * 64 and (cells.sum(0) == 1).all()
    for i in range(8):
        g = ds[i]
        assert isinstance(g, GridSample)
        assert g.image.shape == (3, 64, 64)
        assert g.cell == i % 4
        assert len(set(g.cell_labels.tolist())) == 4
        assert g.label == g.cell_labels[g.cell]
        assert g.mask.any() and not g.mask[~cells[g.cell]].any()
        x0, y0, x1, y1 = g.box.long().tolist()
        assert g.mask[y0:y1, x0:x1].sum() == g.mask.sum()
    again = SyntheticGrid(8, seed=2)[5]
    assert torch.equal(again.image, ds[5].image)
    assert not torch.equal(SyntheticGrid(8, seed=3)[5].image, ds[5].image)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.cell_labels.shape == (4, 4) and batch.cell.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        SyntheticGrid(2, image_size=63)
