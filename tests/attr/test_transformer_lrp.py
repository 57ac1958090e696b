"""TransformerLRP (Chefer et al. 2021) against the authors' reference outputs
and across model families and batch sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import captum_vit as cv
from captum_vit.attr._lrp import AttentionTap, RuleSet, lrp_context, relevance_pass
from captum_vit.attr.transformer_lrp import _layer_map
from tests.attr.reference import model_in, reference, rel_err
from tests.models import hf_vit_from_timm, images, timm_vit, torchvision_vit_from_timm
from tests.tolerance import assert_close_to_scale

KEYS = {"transformer_attribution": "transformer_attribution"}
KEYS["lrp_rollout"] = "lrp_relevance_rollout"


@pytest.mark.parametrize("method", ["transformer_attribution", "lrp_rollout"])
def test_reference_float32(method):
    _, _, ref32, _, targets = reference()
    model, x = model_in(torch.float32)
    assert all(blk.attn.fused_attn for blk in model.blocks)  # timm's default
    lrp = cv.TransformerLRP(model, method=method)
    for t in ("argmax", "5"):
        ours = lrp.attribute(x, target=targets[t], output="tokens")
        err = rel_err(ours.numpy(), ref32[f"{KEYS[method]}__target_{t}"])
        assert err.max() < 1e-3, (t, err)


@pytest.mark.parametrize(
    "method,targets_checked",
    [("transformer_attribution", ("argmax", "5")), ("lrp_rollout", ("argmax",))],
)
def test_reference_float64(method, targets_checked):
    _, _, _, ref64, targets = reference()
    model, x = model_in(torch.float64)
    lrp = cv.TransformerLRP(model, method=method)
    for t in targets_checked:
        ours = lrp.attribute(x, target=targets[t], output="tokens")
        assert ours.dtype == torch.float64
        err = rel_err(ours.numpy(), ref64[f"{KEYS[method]}__target_{t}"])
        assert err.max() < 1e-9, (t, err)  # README §8: sdiv reproduced exactly


def test_reference_attn_cam_per_layer():
    """The relevance at each attention (their ``attn_cam``), image 0."""
    _, _, ref32, _, targets = reference()
    model, x = model_in(torch.float32)
    adapter = cv.adapters.get(model)
    rel = relevance_pass(
        adapter,
        RuleSet(),
        x[:1],
        targets["argmax"][:1],
        wrt_input=False,
        layers=[0, 1, 2],
    ).attention
    expected = ref32["debug_img0_target_argmax__attn_cam"]
    for layer, tol in zip(range(3), (5e-3, 1e-3, 1e-4)):
        ours = rel[layer][0].numpy()
        err = np.abs(ours - expected[layer]).max() / np.abs(expected[layer]).max()
        assert err < tol, (layer, err)


def test_rollout_order_from_layer_maps():
    """Rebuild the rollout from the reference's layer maps (order matters)."""
    _, _, _, ref64, _ = reference()
    maps = torch.from_numpy(ref64["debug_img0_target_argmax__ta_layer_maps"]).double()
    eye = torch.eye(maps.shape[-1], dtype=maps.dtype)
    J = maps[0] + eye
    for m in maps[1:]:
        J = (m + eye) @ J
    err = rel_err(
        J[0, 1:][None].numpy(), ref64["transformer_attribution__target_argmax"][:1]
    )
    assert err.max() < 1e-6


def test_batch_independence_and_families():
    torch.manual_seed(0)
    model = timm_vit()
    x = images(8)
    target = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    lrp = cv.TransformerLRP(model)
    batched = lrp.attribute(x, target=target, output="tokens")
    for i in (0, 5):
        single = lrp.attribute(x[i : i + 1], target=target[i : i + 1], output="tokens")
        assert_close_to_scale(single, batched[i : i + 1], 1e-4)
    for other in (
        hf_vit_from_timm(model, "sdpa"),
        hf_vit_from_timm(model, "eager"),
        torchvision_vit_from_timm(model),
    ):
        got = cv.TransformerLRP(other).attribute(x, target=target, output="tokens")
        assert_close_to_scale(got, batched, 1e-4)


def test_start_layer_and_options():
    model = timm_vit()
    x = images(2)
    full = cv.TransformerLRP(model).attribute(x, target=1, output="tokens")
    late = cv.TransformerLRP(model, start_layer=1).attribute(
        x, target=1, output="tokens"
    )
    assert not torch.allclose(full, late)
    with pytest.raises(ValueError, match="method must be one of"):
        cv.TransformerLRP(model, method="rollout")
    with pytest.raises(ValueError, match="layer"):
        cv.TransformerLRP(model, start_layer=2)
    with pytest.raises(ValueError, match="rules must be"):
        cv.LRP(model, rules="attnlrp")
    with pytest.raises(ValueError, match="rules must be"):
        cv.PartialLRP(model, rules="zplus")


def _layer_maps(model, x, target, op_by_op):
    adapter = cv.adapters.get(model)
    taps = {i: AttentionTap(_layer_map) for i in range(adapter.num_layers)}
    with (
        torch.enable_grad(),
        lrp_context(adapter, RuleSet(), gradients=True, taps=taps) as tracer,
    ):
        tracer.keep_attention = op_by_op  # recorded probabilities: op by op
        xx = x.clone().requires_grad_(True)
        logits = model(xx)
        one_hot = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
        with tracer.mode.gradient():
            torch.autograd.grad(logits, xx, one_hot, retain_graph=True)
        torch.autograd.grad(logits, xx, one_hot)
    assert bool(tracer.attentions) == op_by_op
    return torch.stack([taps[i].result for i in sorted(taps)])


def test_fused_attention_core_equals_op_by_op():
    """The fused attention core (A recomputed in backward, the gradient kept
    at A V) and the op-by-op rules (A recorded, tapped) give the same
    per-layer maps, and TransformerLRP's are those maps."""
    model = timm_vit().double()
    x = images(3).double()
    target = torch.tensor([0, 3, 1])
    fused = _layer_maps(model, x, target, op_by_op=False)
    op_by_op = _layer_maps(model, x, target, op_by_op=True)
    torch.testing.assert_close(fused, op_by_op, rtol=1e-10, atol=1e-14)
    eye = torch.eye(fused.shape[-1], dtype=fused.dtype)
    J = (fused[1] + eye) @ (fused[0] + eye)
    expected = J[:, 0, 1:].reshape(3, 4, 4)
    got = cv.TransformerLRP(model).attribute(x, target=target, output="tokens")
    torch.testing.assert_close(got, expected)
