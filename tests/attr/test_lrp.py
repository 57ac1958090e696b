"""The pixel-relevance LRP methods (``LRP``, ``AttnLRP``) beyond the contract.

They are in ``test_contract.METHODS`` (as per-channel methods); here: a frozen
model under ``torch.no_grad()``, and timm variants (average pooling, layer
scale with registers, distilled DeiT) explained batch-independently.
"""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from tests.models import (
    CLASSES,
    images,
    timm_vit,
)
from tests.tolerance import assert_close_to_scale

TARGET = torch.tensor([0, 3, 1, 4])


@pytest.fixture(scope="module")
def model():
    return timm_vit()


@pytest.fixture(scope="module")
def x():
    return images(4)


def test_no_grad_context_and_frozen_model(model, x):
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            rel = cv.LRP(model).attribute(x, target=TARGET)
            ta = cv.TransformerLRP(model).attribute(x, target=TARGET)
        assert rel.abs().sum() > 0 and ta.abs().sum() > 0
        assert all(not p.requires_grad for p in model.parameters())
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


def test_other_timm_variants():
    """Average pooling, layer scale, distilled DeiT: batch-1 == batch-3."""
    from timm.models.deit import VisionTransformerDistilled

    x = images(3)
    variants = [
        timm_vit(global_pool="avg", class_token=False, fc_norm=True),
        timm_vit(init_values=0.5, reg_tokens=2),
        VisionTransformerDistilled(
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            num_classes=CLASSES,
        ).eval(),
    ]
    for model in variants:
        for method in (cv.LRP(model), cv.AttnLRP(model), cv.TransformerLRP(model)):
            batched = method.attribute(x, target=1, output="tokens")
            single = method.attribute(x[2:], target=1, output="tokens")
            assert torch.isfinite(batched).all()
            assert_close_to_scale(single, batched[2:3], 1e-4)
