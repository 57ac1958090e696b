import json
import os
import struct

import pytest
import torch

import captum_vit.zoo as zoo
from captum_vit.data import CLASS_NAMES, SyntheticGrid, SyntheticObjects
from captum_vit.zoo import Normalize, ZooModel
from captum_vit.zoo._build import build_vit, last_layer_cls_attention
from captum_vit.zoo.train import evaluate, train

WEIGHTS = os.path.join(os.path.dirname(zoo.__file__), "weights")


@pytest.fixture(scope="module")
def loaded():
    return zoo.load("synthetic_vit")


def test_list_models():
    assert "synthetic_vit" in zoo.list_models()
    with pytest.raises(ValueError):
        zoo.load("resnet_on_the_moon")


def test_load_returns_eval_model_transform_classes(loaded):
    assert isinstance(loaded, ZooModel)
    model, transform, classes, meta = loaded
    assert not model.training
    assert classes == list(CLASS_NAMES)
    assert isinstance(transform, Normalize)
    assert model.cls_token is not None and model.global_pool == "token"
    assert meta["config"]["img_size"] == 64 and meta["training"]["seed"] == 0
    assert meta["held_out"]["accuracy"] >= 0.95
    assert meta["held_out"]["seed"] != meta["training"]["seed"]


def test_held_out_accuracy_on_fresh_samples(loaded):
    model, transform, _, meta = loaded
    seed = 2024
    assert seed not in (meta["training"]["seed"], meta["held_out"]["seed"])
    images, labels, _, _ = SyntheticObjects(200, seed=seed, split="test").tensors()
    with torch.no_grad():
        pred = model(transform(images)).argmax(-1)
    assert (pred == labels).float().mean().item() >= 0.95


def test_weights_file_is_safetensors_and_loads_strict():
    from safetensors.torch import load_file

    path = os.path.join(WEIGHTS, "synthetic_vit.safetensors")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    assert "cls_token" in header and header["cls_token"]["dtype"] == "F32"
    assert os.path.getsize(path) < 8 * 2**20
    with open(os.path.join(WEIGHTS, "synthetic_vit.json")) as f:
        meta = json.load(f)
    model = build_vit(meta["config"])
    result = model.load_state_dict(load_file(path), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_normalize():
    norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(norm(x), (x - 0.5) / 0.25)
    assert norm(x[0]).shape == (3, 4, 4)


def test_training_is_reproducible_from_seed():
    config = {
        "img_size": 16,
        "patch_size": 8,
        "num_classes": len(CLASS_NAMES),
        "embed_dim": 16,
        "depth": 1,
        "num_heads": 2,
        "global_pool": "token",
    }
    kwargs = dict(steps=2, batch_size=4, workers=0, log_every=0, config=config)
    a = train(seed=3, **kwargs).state_dict()
    b = train(seed=3, **kwargs).state_dict()
    c = train(seed=4, **kwargs).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # two cycles in one go == the second cycle resumed from the first's weights
    whole = train(seed=3, **{**kwargs, "steps": [2, 2]}).state_dict()
    resumed = train(
        seed=3, **{**kwargs, "steps": [2, 2]}, init_state=a, start_cycle=1
    ).state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert not all(torch.equal(whole[k], a[k]) for k in a)


def test_attention_on_object_measurement(loaded):
    model = loaded.model
    images = loaded.transform(SyntheticObjects(4, seed=9).tensors().image)
    attn = last_layer_cls_attention(model, images)
    assert attn.shape == (4, 64) and (attn >= 0).all()
    assert (attn.sum(-1) <= 1.0 + 1e-5).all()
    stats = evaluate(model, n=16, seed=9, batch_size=8)
    assert set(stats) >= {"accuracy", "attention_on_object", "object_area"}
    assert 0 < stats["object_area"] < stats["attention_on_object_patches"] <= 1


def test_dynamic_img_size_same_outputs_and_takes_grids(loaded):
    dyn = zoo.load("synthetic_vit", dynamic_img_size=True)
    x = loaded.transform(SyntheticObjects(4, seed=7).tensors().image)
    with torch.no_grad():
        assert torch.allclose(dyn.model(x), loaded.model(x), atol=1e-5)
        grid = dyn.transform(
            torch.stack([g.image for g in SyntheticGrid(2, seed=7, image_size=128)])
        )
        assert dyn.model(grid).shape == (2, len(CLASS_NAMES))


# ------------------------------------------------------------ synthetic_swin
def test_synthetic_swin_loads_and_is_accurate():
    from timm.models.swin_transformer import SwinTransformer

    model, transform, classes, meta = zoo.load("synthetic_swin")
    assert isinstance(model, SwinTransformer) and not model.training
    assert "synthetic_swin" in zoo.list_models() and classes == list(CLASS_NAMES)
    assert meta["config"]["architecture"].endswith("SwinTransformer")
    assert meta["held_out"]["accuracy"] >= 0.95
    images, labels, _, _ = SyntheticObjects(200, seed=2024, split="test").tensors()
    with torch.no_grad():
        pred = model(transform(images)).argmax(-1)
    assert (pred == labels).float().mean().item() >= 0.95
    # windows and merging: two stages, the first one shifted in its second block
    graph = cv_adapters().get(model).token_graph((64, 64))
    assert [s.grid for s in graph.stages] == [(8, 8), (4, 4)]
    assert [lw.num_windows for lw in graph.layers] == [4, 4, 1, 1, 1, 1]


def cv_adapters():
    from captum_vit import adapters

    return adapters


def test_train_builds_the_architecture_of_the_config():
    from captum_vit.zoo.train import ARCHITECTURES, SWIN_CONFIG

    assert ARCHITECTURES["swin"] is SWIN_CONFIG
    config = dict(SWIN_CONFIG, embed_dim=8, depths=[1, 1])
    config["num_heads"] = [1, 2]
    model = train(seed=0, steps=1, batch_size=2, workers=0, log_every=0, config=config)
    assert type(model).__name__ == "SwinTransformer"
    assert evaluate(model, n=4, seed=9, batch_size=4).keys() == {"accuracy"}
    with pytest.raises(ValueError, match="unknown zoo architecture"):
        from captum_vit.zoo._build import build_model

        build_model({"architecture": "resnet"})
