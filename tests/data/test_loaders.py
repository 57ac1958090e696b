"""Every loader on tiny files that the tests write in the real formats."""

import os
import pickle

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from captum_vit.data import (
    CIFAR10,
    IMAGENET_S_IGNORE,
    ClassificationSample,
    COVIDQUEx,
    ImageNetFolder,
    ImageNetS,
    ImageNetSegmentation,
    Sample,
    decode_imagenet_s,
)


def _rgb(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ImageNet validation, ImageFolder layout ------------------------------------


@pytest.fixture
def imagenet_dir(tmp_path):
    rng = np.random.default_rng(0)
    pixels = {}
    for synset, n in [("n01440764", 2), ("n01443537", 1)]:
        os.makedirs(tmp_path / synset)
        for i in range(n):
            arr = _rgb(rng, 20 + i, 30)
            if i:  # JPEG is lossy: a smooth image survives it
                arr = np.broadcast_to(
                    np.linspace(0, 250, 30, dtype=np.uint8)[None, :, None], arr.shape
                ).copy()
            name = f"ILSVRC2012_val_{synset[-2:]}{i}"
            if i == 0:
                Image.fromarray(arr).save(tmp_path / synset / f"{name}.png")
            else:
                Image.fromarray(arr).save(
                    tmp_path / synset / f"{name}.JPEG", quality=95
                )
            pixels[(synset, i)] = arr
    (tmp_path / "n01440764" / "notes.txt").write_text("not an image")
    return tmp_path, pixels


def test_imagenet_folder(imagenet_dir):
    root, pixels = imagenet_dir
    ds = ImageNetFolder(str(root))
    assert len(ds) == 3 and ds.classes == ["n01440764", "n01443537"]
    s = ds[0]
    assert isinstance(s, ClassificationSample) and s.label == 0
    expected = torch.from_numpy(pixels[("n01440764", 0)]).permute(2, 0, 1) / 255
    assert torch.allclose(s.image, expected)  # PNG: lossless
    jpeg = ds[1].image
    expected = torch.from_numpy(pixels[("n01440764", 1)]).permute(2, 0, 1) / 255
    assert jpeg.shape == (3, 21, 30) and (jpeg - expected).abs().max() < 0.05
    assert ds[2].label == 1


def test_imagenet_folder_synset_mapping_and_batching(imagenet_dir):
    root, _ = imagenet_dir
    mapping = {"n01440764": 0, "n01443537": 1, "n01484850": 2}
    ds = ImageNetFolder(
        str(root), class_to_idx=mapping, size=16, transform=lambda x: -x
    )
    assert ds.classes == ["n01440764", "n01443537", "n01484850"]
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch.image.shape == (3, 3, 16, 16) and (batch.image <= 0).all()
    assert batch.label.tolist() == [0, 0, 1]
    with pytest.raises(KeyError):
        ImageNetFolder(str(root), class_to_idx={"n01440764": 0})


# ImageNet-Segmentation, gtsegs_ijcv.mat (MATLAB v7.3 = HDF5) ---------------


def _write_gtsegs(path, images, masks):
    """Lay out images and masks as MATLAB v7.3 stores the cell arrays of
    gtsegs_ijcv.mat: /value/img and /value/gt are (N, 1) object references;
    images are stored transposed (3, W, H), each gt entry is a (1, 1) cell
    referencing a transposed (W, H) mask."""
    n = len(images)
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        value = f.create_group("value")
        img_refs = value.create_dataset("img", (n, 1), dtype=h5py.ref_dtype)
        gt_refs = value.create_dataset("gt", (n, 1), dtype=h5py.ref_dtype)
        for i, (img, mask) in enumerate(zip(images, masks)):
            d_img = refs.create_dataset(f"img{i}", data=img.transpose(2, 1, 0))
            d_mask = refs.create_dataset(f"mask{i}", data=mask.T.astype(np.uint8))
            cell = refs.create_dataset(f"cell{i}", (1, 1), dtype=h5py.ref_dtype)
            cell[0, 0] = d_mask.ref
            img_refs[i, 0] = d_img.ref
            gt_refs[i, 0] = cell.ref


def test_imagenet_segmentation(tmp_path):
    rng = np.random.default_rng(1)
    images = [_rgb(rng, 12, 16), _rgb(rng, 10, 14)]
    masks = [np.zeros((12, 16), bool), np.zeros((10, 14), bool)]
    masks[0][3:7, 2:9] = True
    masks[1][0:4, 10:14] = True
    path = str(tmp_path / "gtsegs_ijcv.mat")
    _write_gtsegs(path, images, masks)

    ds = ImageNetSegmentation(path)
    assert len(ds) == 2
    s = ds[0]
    assert isinstance(s, Sample) and s.label == -1
    assert torch.equal(s.image, torch.from_numpy(images[0]).permute(2, 0, 1) / 255)
    assert torch.equal(s.mask, torch.from_numpy(masks[0]))
    assert s.box.tolist() == [2.0, 3.0, 9.0, 7.0]
    assert ds[1].box.tolist() == [10.0, 0.0, 14.0, 4.0]

    sized = ImageNetSegmentation(path, size=(24, 32), labels=[5, 7])
    batch = next(iter(DataLoader(sized, batch_size=2)))
    assert batch.image.shape == (2, 3, 24, 32) and batch.mask.shape == (2, 24, 32)
    assert batch.label.tolist() == [5, 7]
    assert batch.box[0].tolist() == [4.0, 6.0, 18.0, 14.0]  # nearest, x2 scale
    sized.close()
    with pytest.raises(ValueError):
        ImageNetSegmentation(path, labels=[1])


# CIFAR-10, python pickle batches ------------------------------------------


def test_cifar10(tmp_path):
    rng = np.random.default_rng(2)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    written = {}
    for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (data, labels)
    with open(tmp_path / "batches.meta", "wb") as f:
        meta = {b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072}
        pickle.dump(meta, f, protocol=2)

    test = CIFAR10(str(tmp_path))
    assert len(test) == 3 and test.classes[3] == "cat"
    data, labels = written["test_batch"]
    s = test[1]
    assert isinstance(s, ClassificationSample) and s.label == labels[1]
    # the 3072 bytes are the R, G, B planes of a row-major 32x32 image
    assert s.image.shape == (3, 32, 32)
    assert s.image[1, 2, 5] == data[1][1024 + 2 * 32 + 5] / 255.0
    train = CIFAR10(str(tmp_path), train=True, size=48)
    assert len(train) == 10
    assert train[9].label == written["data_batch_5"][1][1]
    batch = next(iter(DataLoader(train, batch_size=4)))
    assert batch.image.shape == (4, 3, 48, 48)


# COVID-QU-Ex, image / mask folders ----------------------------------------


def test_covid_qu_ex(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "Infection Segmentation Data"
    truth = {}
    for cls in ["COVID-19", "Non-COVID", "Normal"]:
        for sub in ["images", "lung masks", "infection masks"]:
            os.makedirs(root / "Test" / cls / sub)
        for i in range(2):
            name = f"{cls.lower()}_{i}.png"
            gray = rng.integers(0, 256, size=(20, 20), dtype=np.uint8)
            lung = np.zeros((20, 20), np.uint8)
            lung[2:18, 1 + i : 9] = 255
            infection = np.zeros((20, 20), np.uint8)
            if cls == "COVID-19":
                infection[5:8, 3:6] = 255
            Image.fromarray(gray).save(root / "Test" / cls / "images" / name)
            Image.fromarray(lung).save(root / "Test" / cls / "lung masks" / name)
            Image.fromarray(infection).save(
                root / "Test" / cls / "infection masks" / name
            )
            truth[(cls, i)] = (gray, lung > 0, infection > 0)

    lung = COVIDQUEx(str(root), split="test", mask="lung")
    assert len(lung) == 6 and lung.classes == ["COVID-19", "Non-COVID", "Normal"]
    s = lung[1]
    gray, lung_mask, _ = truth[("COVID-19", 1)]
    assert isinstance(s, Sample) and s.label == 0
    assert s.image.shape == (3, 20, 20)
    assert torch.equal(s.image[0], torch.from_numpy(gray) / 255.0)
    assert torch.equal(s.image[0], s.image[2])
    assert torch.equal(s.mask, torch.from_numpy(lung_mask))
    assert s.box.tolist() == [2.0, 2.0, 9.0, 18.0]

    inf = COVIDQUEx(str(root), split="Test", mask="infection", size=40)
    labels = [inf[i].label for i in range(len(inf))]
    assert labels == [0, 0, 1, 1, 2, 2]
    assert inf[0].box.tolist() == [6.0, 10.0, 12.0, 16.0]
    assert not inf[4].mask.any() and inf[4].box.tolist() == [0.0] * 4
    batch = next(iter(DataLoader(inf, batch_size=6)))
    assert batch.image.shape == (6, 3, 40, 40) and batch.mask.shape == (6, 40, 40)

    os.remove(root / "Test" / "Normal" / "lung masks" / "normal_0.png")
    with pytest.raises(FileNotFoundError):
        COVIDQUEx(str(root), split="Test")
    with pytest.raises(ValueError):
        COVIDQUEx(str(root), mask="ribs")


# ImageNet-S: masks as RGB PNG, class id = R + 256 * G ------------------------


def _imagenet_s_png(ids):
    """The published encoding: R = id % 256, G = id // 256, B = 0."""
    rgb = np.zeros(ids.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = ids % 256
    rgb[..., 1] = ids // 256
    return rgb


@pytest.fixture
def imagenet_s_dir(tmp_path):
    # 300 classes as in ImageNetS300, of which the test holds three folders;
    # ids above 255 exercise the green channel.
    rng = np.random.default_rng(0)
    categories = [f"n{10000000 + 7 * k:08d}" for k in range(300)]
    root = tmp_path / "ImageNetS300"
    truth = {}
    for wnid, shape in [(categories[4], (12, 16)), (categories[299], (10, 10))]:
        cid = categories.index(wnid) + 1
        for i in range(2):
            name = f"ILSVRC2012_val_{cid:05d}{i}"
            os.makedirs(root / "validation" / wnid, exist_ok=True)
            os.makedirs(root / "validation-segmentation" / wnid, exist_ok=True)
            image = _rgb(rng, *shape)
            Image.fromarray(image).save(root / "validation" / wnid / f"{name}.png")
            ids = np.zeros(shape, dtype=np.int64)
            ids[2:6, 3:9] = cid
            ids[0, :] = IMAGENET_S_IGNORE  # boundary pixels left out
            ids[-1, -1] = 17  # another class elsewhere in the image
            Image.fromarray(_imagenet_s_png(ids)).save(
                root / "validation-segmentation" / wnid / f"{name}.png"
            )
            truth[(wnid, i)] = (image, ids, cid)
    return root, categories, truth


def test_decode_imagenet_s_red_plus_256_green():
    ids = np.array([[0, 1, 255], [256, 919, IMAGENET_S_IGNORE]])
    rgb = _imagenet_s_png(ids)
    assert rgb[1, 2].tolist() == [232, 3, 0]  # 1000 = 232 + 3 * 256
    assert np.array_equal(decode_imagenet_s(rgb), ids)
    rgba = np.concatenate([rgb, np.full(ids.shape + (1,), 255, np.uint8)], -1)
    assert np.array_equal(decode_imagenet_s(rgba), ids)
    with pytest.raises(ValueError):
        decode_imagenet_s(np.zeros((2, 2), dtype=np.uint8))


def test_imagenet_s(imagenet_s_dir):
    root, categories, truth = imagenet_s_dir
    ds = ImageNetS(str(root), categories=categories)
    assert len(ds) == 4 and ds.classes == sorted(categories)
    wnid = categories[299]
    s = ds[2]
    image, ids, cid = truth[(wnid, 0)]
    assert cid == 300 and isinstance(s, Sample) and s.label == 299
    assert ds.classes[s.label] == wnid
    assert torch.equal(s.image, torch.from_numpy(image).permute(2, 0, 1) / 255)
    # the mask is the image's own class: not "other", not ignored, not class 17
    assert torch.equal(s.mask, torch.from_numpy(ids == 300))
    assert s.box.tolist() == [3.0, 2.0, 9.0, 6.0]
    assert torch.equal(ds.segmentation(2), torch.from_numpy(ids))
    assert ds[0].label == 4 and ds[0].mask.sum() == 24

    # a model's own indices; resizing keeps image, mask and ids aligned
    mapping = {w: 1000 + i for i, w in enumerate(categories)}
    sized = ImageNetS(str(root), categories=categories, class_to_idx=mapping, size=20)
    s = sized[2]
    assert s.label == 1299 and s.image.shape == (3, 20, 20)
    assert s.mask.shape == (20, 20) and s.box.tolist() == [6.0, 4.0, 18.0, 12.0]
    seg = sized.segmentation(2)
    assert seg.dtype == torch.int64 and seg.shape == (20, 20)
    assert set(seg.unique().tolist()) == {0, 17, 300, IMAGENET_S_IGNORE}
    assert torch.equal(s.mask, seg == 300)
    batch = next(iter(DataLoader(sized, batch_size=4)))
    assert batch.image.shape == (4, 3, 20, 20) and batch.label.tolist() == [
        1004,
        1004,
        1299,
        1299,
    ]


def test_imagenet_s_default_categories_and_errors(imagenet_s_dir):
    root, categories, _ = imagenet_s_dir
    # without the category list, ids count the folders present: here the
    # second folder would be id 2, so its class-300 pixels are no mask
    ds = ImageNetS(str(root))
    assert ds.classes == sorted([categories[4], categories[299]])
    assert ds[2].label == 1 and not ds[2].mask.any()
    with pytest.raises(KeyError):
        ImageNetS(str(root), categories=categories[:10])
    with pytest.raises(KeyError):
        ImageNetS(str(root), categories=categories, class_to_idx={})
    with pytest.raises(ValueError):
        ImageNetS(str(root), split="test")
    with pytest.raises(FileNotFoundError):
        ImageNetS(str(root), split="train-semi")
    os.remove(next((root / "validation" / categories[4]).iterdir()))
    with pytest.raises(FileNotFoundError):
        ImageNetS(str(root), categories=categories)
