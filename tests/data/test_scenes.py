import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from captum_vit.data import (
    CLASS_NAMES,
    COLOUR_NAMES,
    MAX_OBJECTS,
    SceneSample,
    SyntheticObjects,
    SyntheticScenes,
    box_from_mask,
    object_prompt,
    render_scene,
)
from captum_vit.data.synthetic import _PALETTE


def _present(sample):
    keep = sample.shapes >= 0
    return sample.shapes[keep].tolist(), sample.colours[keep].tolist()


def test_seeded_and_deterministic_per_index():
    a = SyntheticScenes(12, seed=3).tensors()
    b = SyntheticScenes(12, seed=3).tensors()
    c = SyntheticScenes(12, seed=4).tensors()
    for x, y in zip(a, b):
        assert x == y if isinstance(x, tuple) else torch.equal(x, y)
    assert not torch.equal(a.image, c.image) and a.caption != c.caption
    long, short = SyntheticScenes(40, seed=1), SyntheticScenes(5, seed=1)
    assert torch.equal(long[4].image, short[4].image)
    assert torch.equal(long[-1].masks, long[39].masks)
    other_split = SyntheticScenes(5, seed=1, split="train")
    assert not torch.equal(other_split[4].image, short[4].image)
    # its own random stream: not the benchmark image of the same index
    assert not torch.equal(SyntheticObjects(5, seed=1)[4].image, short[4].image)
    with pytest.raises(IndexError):
        short[5]


def test_objects_distinct_shapes_and_colours_and_padding():
    ds = SyntheticScenes(60, seed=0, objects=(1, 3))
    counts = []
    for s in ds:
        assert isinstance(s, SceneSample) and s.shapes.shape == (3,)
        shapes, colours = _present(s)
        k = len(shapes)
        counts.append(k)
        assert 1 <= k <= 3 and (s.shapes[:k] >= 0).all()  # objects come first
        assert len(set(shapes)) == k and len(set(colours)) == k
        assert (s.shapes[k:] == -1).all() and (s.colours[k:] == -1).all()
        assert not s.masks[k:].any() and not s.boxes[k:].any()
    assert set(counts) == {1, 2, 3}
    fixed = SyntheticScenes(5, seed=0, objects=2)
    assert fixed.max_objects == 2
    assert all(len(_present(s)[0]) == 2 for s in fixed)


def test_masks_exact_disjoint_and_boxes_tight():
    for s in SyntheticScenes(40, seed=5, objects=(2, 3)):
        shapes, _ = _present(s)
        masks = s.masks[: len(shapes)]
        assert (masks.sum(dim=(1, 2)) > 40).all()
        assert (masks.sum(0) <= 1).all()  # disjoint
        # objects never touch: a 1-pixel dilation of one misses the others
        dilated = torch.nn.functional.max_pool2d(
            masks.float()[:, None], 3, stride=1, padding=1
        )[:, 0].bool()
        for i in range(len(shapes)):
            others = masks[[j for j in range(len(shapes)) if j != i]].any(0)
            assert not (dilated[i] & others).any()
            assert torch.equal(s.boxes[i], box_from_mask(masks[i]))


def test_colour_is_a_cue_and_caption_names_every_object():
    palette = torch.from_numpy(_PALETTE)
    palette = palette / palette.norm(dim=1, keepdim=True)
    for s in SyntheticScenes(30, seed=2):
        shapes, colours = _present(s)
        assert s.caption == " and ".join(
            object_prompt(a, b) for a, b in zip(shapes, colours)
        )
        for k, colour in enumerate(colours):
            pixels = s.image[:, s.masks[k]]
            assert pixels.std(dim=1).max() < 0.05  # flat colour plus grain
            mean = pixels.mean(dim=1)
            nearest = (palette @ (mean / mean.norm())).argmax().item()
            assert nearest == colour
            assert COLOUR_NAMES[colour] in s.caption
            assert CLASS_NAMES[shapes[k]] in s.caption


def test_object_prompt():
    assert object_prompt(0, 0) == "a red disk"
    assert object_prompt(4, 6) == "an orange ring"
    assert object_prompt(shape=2) == "a triangle"
    assert object_prompt(colour=7) == "a white object"
    with pytest.raises(ValueError):
        object_prompt()
    with pytest.raises(ValueError):
        object_prompt(len(CLASS_NAMES), 0)
    with pytest.raises(ValueError):
        object_prompt(0, -1)


def test_default_collate_and_transform():
    ds = SyntheticScenes(6, seed=0, transform=lambda x: 2 * x - 1)
    raw = SyntheticScenes(6, seed=0)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert isinstance(batch, SceneSample)
    assert batch.image.shape == (4, 3, 64, 64) and (batch.image < 0).any()
    assert list(batch.caption) == [raw[i].caption for i in range(4)]
    assert batch.shapes.shape == (4, 3) and batch.masks.shape == (4, 3, 64, 64)
    assert torch.allclose(batch.image[1], 2 * raw[1].image - 1)
    assert torch.equal(batch.masks[1], raw[1].masks)


def test_bad_arguments():
    with pytest.raises(ValueError):
        SyntheticScenes(4, objects=(0, 2))
    with pytest.raises(ValueError):
        SyntheticScenes(4, objects=MAX_OBJECTS + 1)
    with pytest.raises(ValueError):
        SyntheticScenes(4, objects=(3, 2))
    with pytest.raises(ValueError):
        SyntheticScenes(4, split="holdout")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        render_scene(rng, [0, 1], [2, 2])  # colours must differ
    with pytest.raises(ValueError):
        render_scene(rng, [0, 1], [2])
    with pytest.raises(ValueError):
        render_scene(rng, [0, 9], [1, 2])
    with pytest.raises(ValueError):
        render_scene(rng, [], [])


def test_render_scene_sizes_and_most_objects():
    img, masks = render_scene(np.random.default_rng(1), [0, 1, 2, 3], [0, 1, 2, 3])
    assert img.shape == (3, 64, 64) and img.dtype == np.float32
    assert masks.shape == (4, 64, 64) and masks.any(axis=(1, 2)).all()
    assert 0.0 <= img.min() and img.max() <= 1.0
    s = SyntheticScenes(1, seed=0, image_size=128, objects=MAX_OBJECTS)[0]
    assert s.image.shape == (3, 128, 128) and s.masks.any(dim=(1, 2)).all()


def test_generates_fast():
    import time

    start = time.process_time()  # CPU time: the suite shares cores
    SyntheticScenes(300, seed=0).tensors()
    assert time.process_time() - start < 5.0
