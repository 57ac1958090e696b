"""Every method on the BEiT, EVA and DINOv2 families: finite maps of the
right shape (or the documented refusal), the same maps from the timm and
Hugging Face implementations of one model (float64), batch independence, the
model left as it was after success and after an exception, and rollout on a
tiny BEiT against its formula (relative position bias included)."""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from captum_vit import adapters
from captum_vit.adapters import TimmViTAdapter
from tests import naive
from tests.attr.test_contract import (
    IDS,
    METHODS,
    Boom,
    _raise,
    assert_same_state,
    snapshot,
)
from tests.models import (
    EVA02,
    hf_beit_from_timm,
    hf_dinov2_from_timm,
    images,
    timm_beit,
    timm_dinov2,
    timm_eva,
)

LRP_METHODS = {"transformer_lrp", "partial_lrp", "lrp", "lrp_original", "attn_lrp"}

# name -> (factory, positional attention term: relative bias or RoPE)
FAMILIES = {
    "timm_beit": (lambda: timm_beit(use_shared_rel_pos_bias=True), True),
    "timm_beit_token_abs_only": (
        lambda: timm_beit(use_rel_pos_bias=False, global_pool="token"),
        False,
    ),
    "timm_eva01": (timm_eva, False),
    "timm_eva02": (lambda: timm_eva(**EVA02), True),
    "timm_eva_registers_token": (
        lambda: timm_eva(num_reg_tokens=2, global_pool="token", qkv_fused=False),
        False,
    ),
    "hf_beit": (lambda: hf_beit_from_timm(timm_beit()), True),
    "hf_dinov2_registers": (
        lambda: hf_dinov2_from_timm(timm_dinov2(), mean_head=True),
        False,
    ),
    "timm_dinov2_swiglu": (lambda: timm_dinov2(swiglu=True), False),
}


def _expected_error(method, family, model):
    """The documented refusals: LRP where a rule is missing; methods that
    drop tokens (EViT, TIS) where the attention depends on token positions."""
    if method in LRP_METHODS and adapters.get(model).relevance_gaps():
        return NotImplementedError, "no rule for"
    factory = {n: f for n, f, _ in METHODS}[method]
    if FAMILIES[family][1] and factory(model)._drops_tokens:
        return NotImplementedError, "which positions it kept"
    return None


def _cases():
    out = []
    for family in FAMILIES:
        for name, factory, _ in METHODS:
            out.append(pytest.param(family, name, factory, id=f"{family}-{name}"))
    return out


_MODELS = {}


def _model(family):
    if family not in _MODELS:
        _MODELS[family] = FAMILIES[family][0]()
    return _MODELS[family]


@pytest.mark.parametrize("family,name,factory", _cases())
def test_every_method_runs_or_says_why(family, name, factory):
    """Finite maps of the right shape, batch-independent, and the model
    left as it was after success and after a raise in its forward/backward
    (or the documented NotImplementedError, raised before any change)."""
    model = _model(family)
    x = images(3)
    method = factory(model)
    expected = _expected_error(name, family, model)
    before = snapshot(model)
    if expected is not None:
        with pytest.raises(expected[0], match=expected[1]):
            method.attribute(x, target=1)
        assert_same_state(before, snapshot(model))
        return
    tokens = method.attribute(x, target=torch.tensor([0, 3, 1]), output="tokens")
    assert tokens.shape == (3, 4, 4) and torch.isfinite(tokens).all()
    pixels = method.attribute(x, target=torch.tensor([0, 3, 1]))
    assert pixels.shape == x.shape and torch.isfinite(pixels).all()
    assert_same_state(before, snapshot(model))
    single = method.attribute(x[1:2], target=3, output="tokens")
    torch.testing.assert_close(single[0], tokens[1], rtol=1e-5, atol=1e-7)
    # a raise in the middle of the forward and of the backward pass
    parts = adapters.get(model)
    for module in (parts.block_parts(1).mlp[0], parts.head_parts().classifiers[0]):
        for hook in ("forward", "backward"):
            if hook == "forward":
                handle = module.register_forward_pre_hook(_raise)
            else:
                handle = module.register_full_backward_hook(_raise)
            try:
                before = snapshot(model)
                raised = False
                try:
                    method.attribute(x, target=1)
                except Boom:
                    raised = True
                assert_same_state(before, snapshot(model))
                if hook == "forward" or method._needs_grad:
                    assert raised, f"{hook} hook on {type(module).__name__}"
            finally:
                handle.remove()


# -------------------------------------------------------------------- twins
def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _twin_tol(name):
    # Chefer et al.'s safe_divide adds 1e-9 to every LRP denominator: float
    # rounding differences of the two implementations (fused vs separate
    # q/k/v projections) are amplified where a denominator is tiny
    return 1e-6 if name in LRP_METHODS else 1e-8


@pytest.fixture(scope="module")
def beit_twins():
    timm_model = timm_beit(use_shared_rel_pos_bias=True).double()
    hf = hf_beit_from_timm(timm_model, "sdpa").double()
    return timm_model, hf


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_timm_and_hf_beit_agree(name, factory, tol, beit_twins):
    """timm's ``Beit`` and ``BeitForImageClassification`` with the same
    weights (per-layer and shared relative position bias, layer scale, mean
    pooling) give the same maps in float64."""
    timm_model, hf = beit_twins
    x = images(2).double()
    if factory(timm_model)._drops_tokens:  # refused on both (positions), see above
        for model in (timm_model, hf):
            with pytest.raises(NotImplementedError):
                factory(model).attribute(x, target=2)
        return
    expected = factory(timm_model).attribute(x, target=2, output="tokens")
    got = factory(hf).attribute(x, target=2, output="tokens")
    assert _rel(got, expected) < _twin_tol(name)


class _WithRowOf(TimmViTAdapter):
    """timm's DINOv2-style ViT, read out with the pooling row of Hugging
    Face's DINOv2 head (whose mean half is zero in the twin, so that both
    models compute the same logits)."""

    def __init__(self, model, other):
        super().__init__(model)
        self._other = adapters.get(other)

    def pool_weights(self, num_tokens, device=None, dtype=None):
        return self._other.pool_weights(num_tokens, device, dtype)


@pytest.fixture(scope="module", params=["registers", "no_registers", "swiglu"])
def dinov2_twins(request):
    kwargs = {
        "registers": dict(registers=3),
        "no_registers": dict(registers=0),
        "swiglu": dict(registers=2, swiglu=True),
    }[request.param]
    timm_model = timm_dinov2(**kwargs).double()
    hf = hf_dinov2_from_timm(timm_model, "sdpa").double()
    return timm_model, hf


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_timm_and_hf_dinov2_agree(name, factory, tol, dinov2_twins):
    """A DINOv2-style timm ViT (registers without position embedding, layer
    scale, GELU or SwiGLU MLP) and Hugging Face's DINOv2 with the same
    weights give the same maps in float64 once read out with the same
    pooling row; LRP methods are refused on both for the SwiGLU MLP."""
    timm_model, hf = dinov2_twins
    x = images(2).double()
    if name in LRP_METHODS and adapters.get(hf).relevance_gaps():
        for model in (timm_model, hf):
            with pytest.raises(NotImplementedError, match="gated product"):
                factory(model).attribute(x, target=2)
        return
    # ViT Shapley reads no pooling row (its values are the explainer's
    # per-token outputs; the surrogate masks the mean half, which the twin's
    # head ignores) and trains copies of the model itself; LeGrad with the
    # model's pooling runs each layer through the model's own head: no wrapper
    own_head = ("vit_shapley_untrained", "legrad_all_model_pooling")
    reference = timm_model if name in own_head else None
    reference = _WithRowOf(timm_model, hf) if reference is None else reference
    expected = factory(reference).attribute(x, target=2, output="tokens")
    got = factory(hf).attribute(x, target=2, output="tokens")
    if name == "lrp":
        # Chefer et al.'s renormalised Add at the positional sum shares the
        # relevance by per-sample totals; Hugging Face adds the position to
        # the class token too (timm's DINOv2 layout does not), which changes
        # the patches' share by one factor per image: compare the shapes
        got = got / got.sum((1, 2), keepdim=True)
        expected = expected / expected.sum((1, 2), keepdim=True)
    assert _rel(got, expected) < _twin_tol(name)


# --------------------------------------------------------- naive formulas
@pytest.mark.parametrize("pool", ["avg", "token"])
@pytest.mark.parametrize("fusion", ["mean", "max"])
def test_rollout_on_beit_is_its_formula(pool, fusion):
    """Rollout on a tiny BEiT (per-layer and shared relative position bias)
    equals the formula over attention recomputed naively from the
    parameters: fuse heads, add I, renormalise, multiply the layers, read
    the pooling row (mean over patch rows for mean pooling) at patch columns."""
    model = timm_beit(use_shared_rel_pos_bias=True, global_pool=pool).double()
    x = images(3).double()
    logits, attns = naive.beit_forward(model, x)
    torch.testing.assert_close(logits, model(x), rtol=1e-10, atol=1e-10)
    expected = []
    for i in range(x.shape[0]):
        joint = None
        for a in attns:
            a = a[i].detach()
            fused = a.mean(0) if fusion == "mean" else a.max(0).values
            m = fused + torch.eye(fused.shape[0], dtype=fused.dtype)
            m = m / m.sum(1, keepdim=True)
            joint = m if joint is None else m @ joint
        row = joint[1:].mean(0) if pool == "avg" else joint[0]
        expected.append(row[1:])
    expected = torch.stack(expected)
    for m in (model, hf_beit_from_timm(model, "sdpa").double()):
        got = cv.AttentionRollout(m, head_fusion=fusion).attribute(x, output="tokens")
        torch.testing.assert_close(got.flatten(1), expected, rtol=1e-10, atol=1e-12)
    # without the bias the maps differ: the bias is part of the formula
    _, plain = naive.beit_forward(timm_beit(global_pool=pool).double(), x)
    assert not torch.allclose(plain[0], attns[0], rtol=1e-3, atol=1e-4)


def test_raw_attention_and_gradsam_on_beit_are_their_formulas():
    """Raw attention and Grad-SAM on the tiny BEiT against the naive
    attention and its gradient (one image at a time)."""
    model = timm_beit(use_shared_rel_pos_bias=True).double()
    x = images(2).double()
    target = [1, 4]
    raw, sam = [], []
    for i in range(2):
        logits, attns = naive.beit_forward(model, x[i : i + 1])
        grads = torch.autograd.grad(logits[0, target[i]], attns)
        last = attns[-1][0].detach()
        raw.append(last.mean(0)[1:].mean(0)[1:])
        # Grad-SAM: mean over layers and heads of ReLU(grad) * A, pooled row
        total = sum(
            (g[0].clamp(min=0) * a[0].detach()).mean(0) for g, a in zip(grads, attns)
        )
        sam.append(total[1:].mean(0)[1:])
    got = cv.RawAttention(model).attribute(x, output="tokens").flatten(1)
    torch.testing.assert_close(got, torch.stack(raw), rtol=1e-10, atol=1e-12)
    got = cv.GradSAM(model).attribute(x, target=target, output="tokens").flatten(1)
    torch.testing.assert_close(
        got, torch.stack(sam) / len(model.blocks), rtol=1e-8, atol=1e-12
    )
