"""Half precision on every method of the contract list: a float16 / bfloat16
model is explained within the tolerance documented in
``docs/performance.rst`` (section Half precision) of the float32 map, as a
float32 map, or refused with a ``TypeError`` that says what to pass instead
(``benchmarks/half_precision.py`` measures the same on ViT-S and
``synthetic_vit``)."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import captum_vit as cv
from captum_vit.adapters import Tracer
from tests.attr.test_contract import IDS, METHODS, TARGET
from tests.models import (
    hf_vit_from_timm,
    images,
    timm_cait,
    timm_eva,
    timm_swin,
    timm_vit,
)
from tests.tolerance import rel_err

#: the documented tolerance, per dtype: (largest scale-relative error
#: max|half - f32| / max|f32|, smallest Pearson correlation), worst image
TOLERANCE = {
    torch.bfloat16: (5e-2, 0.99),
    torch.float16: (1e-2, 0.999),
}
HALF = [torch.bfloat16, torch.float16]


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per image, in float64 (1 for two constant maps)."""
    a = a.double().flatten(1)
    b = b.double().flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    corr = (a * b).sum(1) / (na * nb).clamp_min(1e-300)
    return torch.where((na == 0) & (nb == 0), torch.ones_like(corr), corr)


@pytest.fixture(scope="module")
def model():
    return timm_vit()


@pytest.fixture(scope="module")
def x():
    return images(4)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_half_precision_maps(name, factory, tol, dtype, model, x):
    expected = factory(model).attribute(x, target=TARGET)
    half = copy.deepcopy(model).to(dtype)
    method = factory(half)
    if dtype not in method._half_dtypes:
        calls = []
        handle = half.register_forward_pre_hook(lambda *a: calls.append(1))
        try:
            with pytest.raises(TypeError) as err:
                method.attribute(x.to(dtype), target=TARGET)
        finally:
            handle.remove()
        message = str(err.value)
        assert f"does not explain {dtype} models" in message
        assert method._half_refusal and method._half_refusal in message
        assert "copy.deepcopy(model).float() with inputs.float()" in message
        assert calls == []  # refused before any forward pass
        return
    got = method.attribute(x.to(dtype), target=TARGET)
    assert got.shape == x.shape and got.dtype == torch.float32
    max_err, min_corr = TOLERANCE[dtype]
    err, corr = rel_err(got, expected), correlation(got, expected)
    assert (err <= max_err).all(), err
    assert (corr >= min_corr).all(), corr


FAMILIES = {
    "hf_vit": lambda: hf_vit_from_timm(timm_vit()),
    "timm_eva": timm_eva,
    "timm_swin": timm_swin,
    "timm_swin_v2": lambda: timm_swin(v2=True),
    "timm_cait": timm_cait,
}


@pytest.mark.parametrize("family", FAMILIES)
def test_half_precision_families(family):
    """The same rule on the other families: within the tolerance, or refused
    (Swin v2 by the model: its cosine attention's large scale)."""
    model, x = FAMILIES[family](), images(2)
    checked = 0
    for name, factory, _ in METHODS:
        try:
            method = factory(model)
        except (cv.adapters.UnsupportedModelError, NotImplementedError):
            continue  # the method does not apply to this family (tested there)
        expected = method.attribute(x, target=[0, 1])
        for dtype in HALF:
            half = factory(copy.deepcopy(model).to(dtype))
            refusal = half.adapter.half_precision_refusal
            if dtype not in half._half_dtypes or refusal is not None:
                with pytest.raises(TypeError, match=f"does not explain {dtype}"):
                    half.attribute(x.to(dtype), target=[0, 1])
                continue
            got = half.attribute(x.to(dtype), target=[0, 1])
            max_err, min_corr = TOLERANCE[dtype]
            assert (rel_err(got, expected) <= max_err).all(), (name, dtype)
            assert (correlation(got, expected) >= min_corr).all(), (name, dtype)
            checked += 1
    assert checked or family == "timm_swin_v2"
    assert (family == "timm_swin_v2") == (
        cv.adapters.get(model).half_precision_refusal is not None
    )


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_autocast(name, factory, tol, model, x):
    """Under CPU autocast (bfloat16) with a float32 model: the same rule."""
    method = factory(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if torch.bfloat16 not in method._half_dtypes:
            with pytest.raises(TypeError, match="autocast regions"):
                method.attribute(x, target=TARGET)
            return
        got = method.attribute(x, target=TARGET)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()


def test_recorded_attention_is_the_float32_softmax():
    """The tracer hands methods the float32 probabilities of a half model
    (rounded to bfloat16 they would sum to 1 only to about 1e-2), and the
    model's output is the one of the half-precision product A V."""
    model = timm_vit().to(torch.bfloat16)
    x = images(2).to(torch.bfloat16)
    adapter = cv.adapters.get(model)
    with torch.no_grad(), adapter.trace(Tracer()) as tracer:
        traced = adapter.forward(x)
    for attn in tracer.attention_list():
        assert attn.dtype == torch.float32
        assert (attn.sum(-1) - 1).abs().max() < 1e-6
    assert traced.dtype == torch.bfloat16
    unfused = copy.deepcopy(model)
    for blk in unfused.blocks:
        blk.attn.fused_attn = False  # timm's own explicit attention in bf16
    with torch.no_grad():
        stock = unfused(x)
    # timm rounds the probabilities to bfloat16 after a bfloat16 softmax; the
    # tracer after a float32 one: the same model to bfloat16 rounding
    assert rel_err(traced.float(), stock.float()).max() < 2e-2


def test_deep_rollout_in_bfloat16():
    """Twelve layers of nearly uniform attention (random init): rollout's
    map is a product whose structure is below bfloat16's resolution unless
    the product runs in float32."""
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=32, patch_size=4, embed_dim=32, depth=12, num_heads=2, num_classes=5
    ).eval()
    x = images(2)
    expected = cv.AttentionRollout(model).attribute(x, output="tokens")
    half = copy.deepcopy(model).to(torch.bfloat16)
    got = cv.AttentionRollout(half).attribute(x.to(torch.bfloat16), output="tokens")
    assert (correlation(got, expected) >= 0.999).all()
    assert (rel_err(got, expected) <= 1e-2).all()


@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_attn_lrp_half_precision(dtype, attention, model, x):
    """AttnLRP explains half-precision models (it refused them before the LRP
    engine ran as one gradient pass with the softmax rule in float32): its
    signed relevance, per input element and pooled per patch, is within the
    documented tolerance of the float32 model's, and the bfloat16 model's
    map is not the float32 one (the half model really ran)."""
    half = copy.deepcopy(model).to(dtype)
    method = cv.AttnLRP(half, attention=attention)
    assert dtype in method._half_dtypes
    max_err, min_corr = TOLERANCE[dtype]
    for output in ("input", "tokens"):
        expected = cv.AttnLRP(model, attention=attention).attribute(
            x, target=TARGET, output=output
        )
        got = method.attribute(x.to(dtype), target=TARGET, output=output)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        assert (expected.flatten(1).abs().amax(1) > 0).all()
        assert (rel_err(got, expected) <= max_err).all()
        assert (correlation(got, expected) >= min_corr).all()
        assert not torch.equal(got, expected)
    # the same under CPU autocast with the float32 model
    expected = cv.AttnLRP(model, attention=attention).attribute(x, target=TARGET)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cv.AttnLRP(model, attention=attention).attribute(x, target=TARGET)
    assert got.dtype == torch.float32
    assert (rel_err(got, expected) <= TOLERANCE[torch.bfloat16][0]).all()
    assert (correlation(got, expected) >= TOLERANCE[torch.bfloat16][1]).all()


def test_attn_lrp_with_epsilon_refuses_half_precision(model, x):
    """With epsilon > 0 the stabiliser runs in the model's dtype after every
    operation: bfloat16 leaves the tolerance (measured: 5e-2 to 1e-1 of the
    scale on the tiny ViT and Swin), so such half models are refused before
    any forward pass, saying that epsilon=0 explains them."""
    half = copy.deepcopy(model).to(torch.bfloat16)
    calls = []
    handle = half.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(TypeError, match="epsilon=0 explains") as err:
            cv.AttnLRP(half, epsilon=1e-6).attribute(x.to(torch.bfloat16))
    finally:
        handle.remove()
    assert "does not explain torch.bfloat16 models" in str(err.value)
    assert calls == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(TypeError, match="autocast regions"):
            cv.AttnLRP(model, epsilon=1e-6).attribute(x)
    # float32 models are explained with any epsilon
    assert torch.isfinite(cv.AttnLRP(model, epsilon=1e-6).attribute(x)).all()
