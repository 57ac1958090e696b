"""Contract tests of the pixel-relevance LRP methods (``LRP``, ``AttnLRP``).

Their natural output is relevance per input element ``(B, C, H, W)``, which
differs between channels, so they are not in ``test_contract.METHODS`` (whose
output test checks a channel-repeated token map); the same checks run here,
with the helpers of ``test_contract``.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import infidelity

import captum_vit as cv
from tests.attr.test_contract import Boom, _raise, assert_same_state, snapshot
from tests.models import (
    CLASSES,
    hf_vit_from_timm,
    images,
    timm_vit,
    torchvision_vit_from_timm,
)

PIXEL_METHODS = [
    ("lrp", lambda m: cv.LRP(m)),
    ("lrp_original", lambda m: cv.LRP(m, rules="original")),
    ("attn_lrp", lambda m: cv.AttnLRP(m)),
]
IDS = [m[0] for m in PIXEL_METHODS]
TARGET = torch.tensor([0, 3, 1, 4])


@pytest.fixture(scope="module")
def model():
    return timm_vit()


@pytest.fixture(scope="module")
def x():
    return images(4)


@pytest.mark.parametrize("name,factory", PIXEL_METHODS, ids=IDS)
def test_output_contract(name, factory, model, x):
    method = factory(model)
    rel = method.attribute(x, target=TARGET)
    assert rel.shape == x.shape and rel.dtype == x.dtype
    assert not rel.requires_grad and torch.isfinite(rel).all()
    tokens = method.attribute(x, target=TARGET, output="tokens")
    assert tokens.shape == (4, 4, 4)
    # tokens = relevance summed over channels and within each 8x8 patch
    expected = rel.sum(1).reshape(4, 4, 8, 4, 8).sum((2, 4))
    torch.testing.assert_close(tokens, expected)
    pred = model(x).argmax(-1)
    assert torch.equal(method.attribute(x), method.attribute(x, target=pred))
    assert torch.equal(
        method.attribute(x, target=2), method.attribute(x, target=[2, 2, 2, 2])
    )
    one = method.attribute((x,), target=TARGET)
    assert isinstance(one, tuple) and torch.equal(one[0], rel)
    assert method.has_convergence_delta() is False
    assert isinstance(method.get_name(), str)


@pytest.mark.parametrize("name,factory", PIXEL_METHODS[::2], ids=IDS[::2])
def test_families_and_batch_independence(name, factory, model, x):
    method = factory(model)
    batched = method.attribute(x, target=TARGET)
    for i in (0, 3):
        single = method.attribute(x[i : i + 1], target=TARGET[i : i + 1])
        torch.testing.assert_close(single[0], batched[i], rtol=1e-5, atol=1e-7)
    scale = batched.abs().max()
    for other in (hf_vit_from_timm(model), torchvision_vit_from_timm(model)):
        got = factory(other).attribute(x, target=TARGET)
        assert ((got - batched).abs().max() / scale) < 1e-4


@pytest.mark.parametrize("name,factory", PIXEL_METHODS[::2], ids=IDS[::2])
@pytest.mark.parametrize("family", ["timm", "hf", "torchvision"])
def test_state_restored(name, factory, family, x):
    base = timm_vit()
    model = {
        "timm": lambda: base,
        "hf": lambda: hf_vit_from_timm(base),
        "torchvision": lambda: torchvision_vit_from_timm(base),
    }[family]()
    adapter = cv.adapters.get(model)
    adapter.blocks()[0].train()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.ones_like(params[-1])
    handle = model.register_forward_hook(lambda *a: None)
    method = factory(model)
    try:
        before = snapshot(model)
        method.attribute(x, target=TARGET)
        assert_same_state(before, snapshot(model))
        # a raise in the middle of the forward (in a block, in the head) and
        # of the relevance pass must leave the model as it was
        for module in (
            adapter.block_parts(1).mlp[0],
            adapter.head_parts().classifiers[0],
        ):
            for where in ("forward", "backward"):
                if where == "forward":
                    h = module.register_forward_pre_hook(_raise)
                else:
                    h = module.register_full_backward_hook(_raise)
                try:
                    before = snapshot(model)
                    with pytest.raises(Boom):
                        method.attribute(x, target=TARGET)
                    assert_same_state(before, snapshot(model))
                finally:
                    h.remove()
    finally:
        handle.remove()


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


def test_captum_metrics_accept_output(model, x):
    method = cv.AttnLRP(model)
    rel = method.attribute(x, target=TARGET)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.01
        return noise, inputs - noise

    torch.manual_seed(0)
    infid = infidelity(
        lambda t: model(t), perturb, x, rel, target=TARGET, n_perturb_samples=2
    )
    assert infid.shape == (4,) and torch.isfinite(infid).all()
    nt = NoiseTunnel(method)
    smooth = nt.attribute(
        x, nt_type="smoothgrad", nt_samples=2, target=TARGET, stdevs=0.1
    )
    assert smooth.shape == x.shape


@pytest.mark.parametrize("name,factory", PIXEL_METHODS, ids=IDS)
def test_bad_input(name, factory, model, x):
    method = factory(model)
    with pytest.raises(ValueError, match="B, C, H, W"):
        method.attribute(x[0])
    bad = x.clone()
    bad[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        method.attribute(bad)
    with pytest.raises(ValueError, match="out of range"):
        method.attribute(x, target=CLASSES)
    with pytest.raises(ValueError, match="entries for a batch"):
        method.attribute(x, target=[0, 1])
    with pytest.raises(ValueError, match="takes 32x32 images"):
        method.attribute(images(2, size=48))
    with pytest.raises(ValueError, match="output must be one of"):
        method.attribute(x, output="pixels")


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
            torch.testing.assert_close(single[0], batched[2], rtol=1e-5, atol=1e-7)
