"""The public model description: describe, patch_size, grid_size."""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from captum_vit.adapters import UnsupportedModelError
from tests.models import hf_vit_from_timm, timm_vit, torchvision_vit_from_timm


def test_describe_every_family():
    base = timm_vit()
    for model in (base, hf_vit_from_timm(base), torchvision_vit_from_timm(base)):
        info = cv.attr.describe(model)
        assert isinstance(info, cv.attr.ModelInfo)
        assert (info.num_layers, info.num_heads, info.patch_size) == (2, 2, (8, 8))
        assert (info.num_prefix_tokens, info.num_classes) == (1, 5)
        assert info.pooling == "token" and isinstance(info.family, str)
        assert cv.attr.patch_size(model) == 8
        assert cv.attr.grid_size(model, (32, 32)) == (4, 4)
    avg = cv.attr.describe(timm_vit(class_token=False, global_pool="avg", reg_tokens=2))
    assert (avg.num_prefix_tokens, avg.pooling) == (2, "avg")
    # the same through a wrapper
    assert cv.attr.describe(torch.nn.DataParallel(base)) == cv.attr.describe(base)


def test_grid_size_follows_the_image_and_checks_it():
    dynamic = timm_vit(dynamic_img_size=True)
    assert cv.attr.grid_size(dynamic, (48, 40)) == (6, 5)
    with pytest.raises(ValueError, match="takes 32x32 images"):
        cv.attr.grid_size(timm_vit(), (48, 48))


def test_non_square_patches_and_unsupported_models():
    model = timm_vit(patch_size=(8, 4))
    assert cv.attr.describe(model).patch_size == (8, 4)
    assert cv.attr.grid_size(model, (32, 32)) == (4, 8)
    with pytest.raises(ValueError, match="not square"):
        cv.attr.patch_size(model)
    with pytest.raises(UnsupportedModelError, match="Supported families"):
        cv.attr.describe(torch.nn.Linear(2, 2))
