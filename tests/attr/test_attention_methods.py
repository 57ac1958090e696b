"""RawAttention, AttentionRollout, GradSAM, GenericAttention against their
formulas (computed naively in tests/naive.py, one image at a time, without
captum_vit's adapters) and against Chefer et al.'s reference outputs."""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from tests import naive
from tests.attr.reference import load_reference, rel_err
from tests.models import hf_config, images, timm_vit
from tests.tolerance import assert_close_to_scale

TARGET = torch.tensor([0, 3, 1, 4])


def _variants():
    return {
        "vit": timm_vit(),
        "deit_distilled": timm_vit(distilled=True),
        "registers_layerscale": timm_vit(reg_tokens=2, init_values=0.5),
        "avg_pool": timm_vit(class_token=False, global_pool="avg"),
        "avg_pool_with_cls": timm_vit(global_pool="avg"),
    }


VARIANTS = _variants()


def _readout(model, matrix):
    """Explained row at patch columns, written out for each timm variant."""
    npre = model.num_prefix_tokens
    if model.global_pool == "avg":
        row = matrix[:, npre:].mean(1)
    elif getattr(model, "dist_token", None) is not None:
        row = (matrix[:, 0] + matrix[:, 1]) / 2
    else:
        row = matrix[:, 0]
    return row[:, npre:]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_raw_attention_formula(variant):
    model, x = VARIANTS[variant], images(4)
    _, attns = naive.forward(model, x)
    for layer, head, fusion in [(-1, None, "mean"), (0, 1, "mean"), (1, None, "max")]:
        a = attns[layer].detach()
        m = (
            a[:, head]
            if head is not None
            else getattr(a, {"mean": "mean", "max": "amax"}[fusion])(1)
        )
        expected = _readout(model, m)
        got = cv.RawAttention(
            model, layer=layer, head=head, head_fusion=fusion
        ).attribute(x, output="tokens")
        assert_close_to_scale(got.flatten(1), expected, 1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_raw_attention_per_head(variant):
    """``head_fusion=None``: one map per head, read as the fused map is; the
    whole matrix from ``attention_matrix`` is the naive forward's."""
    model, x = VARIANTS[variant], images(3)
    _, attns = naive.forward(model, x)
    gh, gw = 4, 4
    for layer in (0, -1):
        a = attns[layer].detach()  # (B, heads, N, N)
        heads = a.shape[1]
        method = cv.RawAttention(model, layer=layer, head_fusion=None)
        torch.testing.assert_close(method.attention_matrix(x), a, rtol=1e-5, atol=1e-6)
        tokens = method.attribute(x, output="tokens")
        assert tokens.shape == (3, heads, gh, gw)
        expected = torch.stack([_readout(model, a[:, h]) for h in range(heads)], 1)
        torch.testing.assert_close(tokens.flatten(2), expected, rtol=1e-5, atol=1e-6)
        pixels = method.attribute(x)
        assert pixels.shape == (3, heads, 32, 32)
        for h in range(heads):
            single = cv.RawAttention(model, layer=layer, head=h)
            torch.testing.assert_close(
                pixels[:, h], single.attribute(x)[:, 0], rtol=1e-6, atol=1e-7
            )
        one = method.attribute((x,))
        assert isinstance(one, tuple) and torch.equal(one[0], pixels)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_formula(variant, fusion):
    model, x = VARIANTS[variant], images(4)
    _, attns = naive.forward(model, x)
    for start in (0, 1):
        expected = []
        for i in range(x.shape[0]):
            joint = None
            for a in attns[start:]:
                a = a[i].detach()
                fused = {
                    "mean": a.mean(0),
                    "max": a.max(0).values,
                    "min": a.min(0).values,
                }[fusion]
                n = fused.shape[0]
                m = fused + torch.eye(n)
                m = m / m.sum(1, keepdim=True)
                joint = m if joint is None else m @ joint
            expected.append(joint)
        expected = _readout(model, torch.stack(expected))
        got = cv.AttentionRollout(
            model, head_fusion=fusion, start_layer=start
        ).attribute(x, output="tokens")
        assert_close_to_scale(got.flatten(1), expected, 1e-5)


def test_rollout_discard_ratio():
    model, x = VARIANTS["vit"], images(2)
    _, attns = naive.forward(model, x)
    ratio = 0.6
    expected = []
    for i in range(x.shape[0]):
        joint = None
        for a in attns:
            fused = a[i].detach().mean(0)
            n = fused.shape[0]
            flat = fused.flatten().clone()
            order = flat.argsort()  # ascending
            drop = [j for j in order[: int(n * n * ratio)].tolist() if j != 0]
            flat[drop] = 0
            m = flat.reshape(n, n) + torch.eye(n)
            m = m / m.sum(1, keepdim=True)
            joint = m if joint is None else m @ joint
        expected.append(joint[0, 1:])
    got = cv.AttentionRollout(model, discard_ratio=ratio).attribute(x, output="tokens")
    assert_close_to_scale(got.flatten(1), torch.stack(expected), 1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_grad_sam_formula(variant):
    model, x = VARIANTS[variant], images(4)
    A, G = naive.attention_and_grads(model, x, TARGET)
    gsam = sum((a * g.clamp(min=0)).mean(1) for a, g in zip(A, G)) / len(A)
    got = cv.GradSAM(model).attribute(x, target=TARGET, output="tokens")
    assert_close_to_scale(got.flatten(1), _readout(model, gsam), 1e-4)
    got_all = cv.GradSAM(model, query="all").attribute(
        x, target=TARGET, output="tokens"
    )
    npre = model.num_prefix_tokens
    assert_close_to_scale(got_all.flatten(1), gsam.mean(1)[:, npre:], 1e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_generic_attention_formula(variant):
    model, x = VARIANTS[variant], images(4)
    A, G = naive.attention_and_grads(model, x, TARGET)
    for start in (0, 1):
        out = []
        for i in range(x.shape[0]):
            n = A[0].shape[-1]
            R = torch.eye(n)
            for a, g in list(zip(A, G))[start:]:
                cam = (g[i] * a[i]).clamp(min=0).mean(0)
                R = R + cam @ R
            out.append(R)
        expected = _readout(model, torch.stack(out))
        got = cv.GenericAttention(model, start_layer=start).attribute(
            x, target=TARGET, output="tokens"
        )
        assert_close_to_scale(got.flatten(1), expected, 1e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_equals_unfused(variant):
    model, x = VARIANTS[variant], images(3)
    methods = [cv.RawAttention, cv.AttentionRollout, cv.GradSAM, cv.GenericAttention]
    fused = [m(model).attribute(x, target=1, output="tokens") for m in methods]
    for blk in model.blocks:
        blk.attn.fused_attn = False
    try:
        for m, f in zip(methods, fused):
            got = m(model).attribute(x, target=1, output="tokens")
            assert_close_to_scale(got, f, 1e-4)
    finally:
        for blk in model.blocks:
            blk.attn.fused_attn = True


def test_dynamic_image_size():
    model = timm_vit(dynamic_img_size=True)
    x = images(2, size=48)[..., :40]  # 48x40 -> 6x5 grid
    for m in (cv.AttentionRollout, cv.GenericAttention):
        tokens = m(model).attribute(x, output="tokens")
        assert tokens.shape == (2, 6, 5)
        assert m(model).attribute(x).shape == x.shape


def test_hf_deit_distilled_tokens():
    from transformers import DeiTConfig, DeiTForImageClassification

    torch.manual_seed(0)
    model = DeiTForImageClassification(hf_config(DeiTConfig)).eval()
    adapter = cv.adapters.get(model)
    assert adapter.num_prefix_tokens == 2
    x = images(2)
    with adapter.trace() as tracer:
        logits = adapter.forward(x)
    assert tracer.attentions[0].shape == (2, 2, 18, 18)
    torch.testing.assert_close(logits, model(x).logits)
    # DeiTForImageClassification reads only the class token
    roll = cv.AttentionRollout(model).attribute(x, output="tokens")
    assert roll.shape == (2, 4, 4)


# --------------------------------------------------- Chefer et al.'s reference
@pytest.fixture(scope="module")
def reference():
    return load_reference()


def test_rollout_matches_reference(reference):
    model, x, ref, _ = reference
    got = cv.AttentionRollout(model).attribute(x, output="tokens")
    assert rel_err(got, ref["rollout__target_argmax"]).max() < 1e-4


def test_raw_attention_matches_reference(reference):
    model, x, ref, _ = reference
    got = cv.RawAttention(model).attribute(x, output="tokens")
    assert rel_err(got, ref["last_layer_attn__target_argmax"]).max() < 1e-4


def test_rollout_float64_matches_reference(reference):
    model, x, _, ref64 = reference
    model = model.double()
    got = cv.AttentionRollout(model).attribute(x.double(), output="tokens")
    assert got.dtype == torch.float64
    assert rel_err(got, ref64["rollout__target_argmax"]).max() < 1e-9
    model.float()
