"""Captum's own methods on ViTs through the helpers: same output contract as
the ViT methods, equal to naive computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    FeatureAblation,
    IntegratedGradients,
    KernelShap,
    Lime,
    Occlusion,
    ShapleyValueSampling,
)

import captum_vit as cv
from tests.models import (
    PATCH,
    hf_vit_from_timm,
    images,
    timm_vit,
    torchvision_vit_from_timm,
)
from tests.tolerance import assert_close_to_scale

TARGET = torch.tensor([0, 3])


@pytest.fixture(scope="module")
def model():
    return timm_vit()


@pytest.fixture(scope="module")
def x():
    return images(2)


def test_forward_func_returns_logits_for_every_family(model, x):
    expected = model(x)
    for other in (hf_vit_from_timm(model), torchvision_vit_from_timm(model)):
        got = cv.forward_func(other)(x)
        assert isinstance(got, torch.Tensor)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_integrated_gradients_as_is_on_hf(model, x):
    hf = hf_vit_from_timm(model)
    a = IntegratedGradients(cv.forward_func(hf)).attribute(x, target=TARGET, n_steps=8)
    b = IntegratedGradients(model).attribute(x, target=TARGET, n_steps=8)
    assert a.shape == x.shape
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    assert cv.to_tokens(a, hf).shape == (2, 4, 4)


def test_patch_feature_mask(model, x):
    mask = cv.patch_feature_mask(model, x)
    assert mask.shape == (1, 3, 32, 32) and mask.dtype == torch.long
    assert mask.unique().tolist() == list(range(16))
    for i in range(4):
        for j in range(4):
            patch = mask[0, :, i * PATCH : (i + 1) * PATCH, j * PATCH : (j + 1) * PATCH]
            assert (patch == i * 4 + j).all()
    assert cv.patch_window(model, x) == (3, PATCH, PATCH)


def naive_patch_ablation(model, x, target):
    """Zero one patch at a time by hand; score = drop of the target logit."""
    base = model(x).gather(1, target[:, None])[:, 0]
    out = torch.zeros(x.shape[0], 4, 4)
    for i in range(4):
        for j in range(4):
            xp = x.clone()
            xp[:, :, i * PATCH : (i + 1) * PATCH, j * PATCH : (j + 1) * PATCH] = 0
            out[:, i, j] = base - model(xp).gather(1, target[:, None])[:, 0]
    return out


def test_feature_ablation_and_occlusion_equal_naive(model, x):
    with torch.no_grad():
        expected = naive_patch_ablation(model, x, TARGET)
    mask = cv.patch_feature_mask(model, x)
    fa = FeatureAblation(cv.forward_func(model)).attribute(
        x, target=TARGET, feature_mask=mask
    )
    win = cv.patch_window(model, x)
    occ = Occlusion(cv.forward_func(model)).attribute(
        x, target=TARGET, sliding_window_shapes=win, strides=win
    )
    for attr in (fa, occ):
        assert attr.shape == x.shape
        tokens = cv.to_tokens(attr, model, reduce="mean")
        assert_close_to_scale(tokens, expected, 1e-3)


def _sampler(cls, f):
    method = cls(f)
    if cls in (KernelShap, Lime):
        # Captum's default surrogate is scikit-learn's, absent from this
        # environment; its torch-based linear regression fits the same model
        from captum._utils.models.linear_model import SGDLinearRegression

        method.interpretable_model = SGDLinearRegression()
    return method


@pytest.mark.parametrize("cls", [KernelShap, Lime, ShapleyValueSampling])
def test_sampling_methods_are_patch_constant(model, x, cls):
    mask = cv.patch_feature_mask(model, x)
    torch.manual_seed(0)
    kw = {"n_samples": 20} if cls is not ShapleyValueSampling else {"n_samples": 2}
    attr = _sampler(cls, cv.forward_func(model)).attribute(
        x[:1], target=TARGET[:1], feature_mask=mask, **kw
    )
    x = x[:1]
    assert attr.shape == x.shape
    tokens = cv.to_tokens(attr, model, reduce="mean")
    up = tokens.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)
    torch.testing.assert_close(attr, up[:, None].expand_as(attr))


def test_to_tokens_sum_and_mean(model):
    attr = torch.arange(2 * 3 * 32 * 32, dtype=torch.float).reshape(2, 3, 32, 32)
    s = cv.to_tokens(attr, model)
    expected = attr.sum(1).reshape(2, 4, 8, 4, 8).sum((2, 4))
    torch.testing.assert_close(s, expected)
    m = cv.to_tokens(attr, model, reduce="mean")
    torch.testing.assert_close(m, expected / (3 * 64))
    with pytest.raises(ValueError, match="reduce"):
        cv.to_tokens(attr, model, reduce="max")


def _leaf(feats, t):
    """Replace a tensor by a leaf that requires grad, to differentiate at it."""
    feats["o"] = t.detach().requires_grad_(True)
    return feats["o"]


def naive_gradcam(model, x, target, layer, relu=True, to_input=True):
    feats = {}
    blk = model.blocks[layer]
    if to_input:
        h = blk.register_forward_pre_hook(lambda m, a: (_leaf(feats, a[0]),))
    else:
        h = blk.register_forward_hook(lambda m, a, o: _leaf(feats, o))
    try:
        logits = model(x)
    finally:
        h.remove()
    out = feats["o"]
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), out)
    npre = model.num_prefix_tokens
    # (B, N, D) tokens -> (B, D, gh, gw) feature map, then Captum's LayerGradCam
    fmap = out[:, npre:].detach().transpose(1, 2).reshape(x.shape[0], -1, 4, 4)
    gmap = g[:, npre:].transpose(1, 2).reshape(x.shape[0], -1, 4, 4)
    cam = (gmap.mean((2, 3), keepdim=True) * fmap).sum(1)
    return F.relu(cam) if relu else cam


@pytest.mark.parametrize(
    "layer,relu,to_input", [(-1, True, True), (-1, False, True), (0, True, False)]
)
def test_vit_gradcam_equals_naive(model, x, layer, relu, to_input):
    expected = naive_gradcam(model, x, TARGET, layer, relu, to_input)
    got = cv.ViTGradCam(
        model, layer=layer, attribute_to_layer_input=to_input, relu_attributions=relu
    ).attribute(x, target=TARGET, output="tokens")
    assert_close_to_scale(got, expected, 1e-4)
    assert expected.abs().max() > 0


def test_vit_gradcam_other_grid_and_prefix_tokens():
    # 48x32 images on a dynamic-size model with 2 register tokens: 6x4 grid,
    # three prefix tokens dropped (a fixed 14x14 / "drop one" reshape breaks)
    model = timm_vit(dynamic_img_size=True, reg_tokens=2)
    x = torch.randn(2, 3, 48, 32)
    got = cv.ViTGradCam(model).attribute(x, target=TARGET, output="tokens")
    assert got.shape == (2, 6, 4)
    feats = {}
    h = model.blocks[-1].register_forward_pre_hook(lambda m, a: (_leaf(feats, a[0]),))
    logits = model(x)
    h.remove()
    out = feats["o"]
    (g,) = torch.autograd.grad(logits.gather(1, TARGET[:, None]).sum(), out)
    cam = F.relu((g[:, 3:].mean(1, keepdim=True) * out[:, 3:].detach()).sum(-1))
    assert_close_to_scale(got, cam.reshape(2, 6, 4), 1e-4)
    assert cam.abs().max() > 0
    assert "vit_gradcam" in cv.attr.list_methods()
