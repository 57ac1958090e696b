"""AGCAM against the authors' code (stored outputs) and against a naive
re-implementation with hooks on a stock timm model: the attention input
detached as the authors' model does, pre-softmax scores recomputed from the
``qkv`` output, attention gradients from the unfused attention's dropout."""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from tests.attr.data import load, tiny_vit
from tests.models import images, timm_vit

REF = load("agcam")
REDUCE = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}


def naive_agcam(
    model, x, target, head_reduction="sum", layer_reduction="sum", detach=True
):
    npre = model.num_prefix_tokens
    out = []
    for b in range(x.shape[0]):
        qkv, attn, handles = [], [], []
        for blk in model.blocks:
            blk.attn.fused_attn = False
            handles += [
                blk.attn.qkv.register_forward_hook(
                    lambda m, a, o, qkv=qkv: qkv.append(o)
                ),
                blk.attn.attn_drop.register_forward_hook(
                    lambda m, a, o, attn=attn: attn.append(o)
                ),
            ]
            if detach:
                handles.append(
                    blk.attn.register_forward_pre_hook(lambda m, a: (a[0].detach(),))
                )
        try:
            logits = model(x[b : b + 1])
            for a in attn:
                a.retain_grad()
            logits[0, target[b]].backward()
        finally:
            for h in handles:
                h.remove()
            for blk in model.blocks:
                blk.attn.fused_attn = True
        per_layer = []
        for blk, t, a in zip(model.blocks, qkv, attn):
            H, N = blk.attn.num_heads, t.shape[1]
            q, k, _ = t.reshape(1, N, 3, H, -1).permute(2, 0, 3, 1, 4)
            scores = (q @ k.transpose(-1, -2) * blk.attn.scale).detach()
            cam = a.grad.clamp(min=0) * scores.sigmoid()  # (1, H, N, N)
            row = (
                cam[0, :, npre:].mean(1) if model.global_pool == "avg" else cam[0, :, 0]
            )
            per_layer.append(REDUCE[head_reduction](row[:, npre:], 0))
        out.append(REDUCE[layer_reduction](torch.stack(per_layer), 0))
    model.zero_grad(set_to_none=True)
    return torch.stack(out)


@pytest.mark.parametrize("fusion", ["sum_sum", "mean_max"])
@pytest.mark.parametrize("target", ["pred", "3"])
def test_matches_authors(fusion, target):
    """The authors' AGCAM class on their modified timm ViT; see data/agcam."""
    model = tiny_vit(REF)
    x = torch.from_numpy(REF["x"])
    key = f"{fusion}/{target}"
    head, layer = fusion.split("_")
    method = cv.AGCAM(model, head_reduction=head, layer_reduction=layer)
    t = torch.from_numpy(REF[f"{key}/target"])
    if target == "pred":
        assert torch.equal(t, model(x).argmax(-1))
    got = method.attribute(x, target=t, output="tokens").flatten(1)
    expected = torch.from_numpy(REF[f"{key}/map"])
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize(
    "fusion,kwargs",
    [
        (("sum", "sum"), {}),
        (("max", "mean"), {}),
        (("sum", "sum"), {"global_pool": "avg"}),
        (("sum", "sum"), {"reg_tokens": 2}),
    ],
)
def test_equals_naive(fusion, kwargs):
    model = timm_vit(**kwargs).double()
    x = images(3).double()
    target = torch.tensor([0, 4, 2])
    expected = naive_agcam(model, x, target, *fusion)
    got = cv.AGCAM(model, *fusion).attribute(x, target=target, output="tokens")
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-9, atol=1e-12)


def test_gradient_skips_the_attention_input():
    """The detach matters: with the gradient through the attention inputs
    the map differs (so the naive comparison above can tell)."""
    model = timm_vit().double()
    x = images(2).double()
    target = torch.tensor([0, 4])
    got = cv.AGCAM(model).attribute(x, target=target, output="tokens").flatten(1)
    through = naive_agcam(model, x, target, detach=False)
    assert (got - through).abs().max() > 1e-3 * got.abs().max()


def test_bad_options():
    with pytest.raises(ValueError, match="head_reduction"):
        cv.AGCAM(timm_vit(), head_reduction="median")
    with pytest.raises(ValueError, match="layer_reduction"):
        cv.AGCAM(timm_vit(), layer_reduction="prod")
