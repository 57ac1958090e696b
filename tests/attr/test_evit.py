"""EViT view against a naive pruned forward written from the EViT paper."""

from __future__ import annotations

import math

import pytest
import torch

import captum_vit as cv
from captum_vit.attr.evit import default_prune_layers
from tests.models import images, timm_vit


def naive_evit(model, x, keep_rate, prune_layers, fuse=True):
    """Blocks run by hand on a timm model; EViT's reorganisation after the
    attention residual of each pruning block. Returns (depth, logits)."""
    L = len(model.blocks)
    out_depth, out_logits = [], []
    for b in range(x.shape[0]):
        h = model._pos_embed(model.patch_embed(x[b : b + 1]))[0]  # (N, D)
        P = h.shape[0] - 1
        ids = list(range(P))
        depth = torch.full((P,), float(L))
        for i, blk in enumerate(model.blocks):
            at = blk.attn
            N, D = h.shape
            qkv = at.qkv(blk.norm1(h)).reshape(N, 3, at.num_heads, D // at.num_heads)
            q, k, v = qkv.permute(1, 2, 0, 3)
            a = (q @ k.transpose(-1, -2) * at.scale).softmax(-1)
            o = (a @ v).transpose(0, 1).reshape(N, D)
            h = h + at.proj(o)
            if i in prune_layers:
                n = N - 1
                left = math.ceil(keep_rate * n)
                if left < n:
                    cls = a[:, 0, 1:].mean(0)
                    order = sorted(range(n), key=lambda j: -cls[j].item())
                    keep, drop = order[:left], sorted(order[left:])
                    for j in drop:
                        if ids[j] >= 0:
                            depth[ids[j]] = i + 1
                    rows = [h[0]] + [h[1 + j] for j in keep]
                    new_ids = [ids[j] for j in keep]
                    if fuse:
                        rows.append(sum(h[1 + j] * cls[j] for j in drop))
                        new_ids.append(-1)
                    h, ids = torch.stack(rows), new_ids
            h = h + blk.mlp(blk.norm2(h))
        out_depth.append(depth)
        out_logits.append(model.head(model.norm(h)[0]))
    return torch.stack(out_depth), torch.stack(out_logits)


@pytest.mark.parametrize(
    "depth,keep_rate,layers,fuse",
    [(4, 0.5, None, True), (4, 0.7, [0, 2], False), (2, 0.6, None, True)],
)
def test_equals_naive_pruned_forward(depth, keep_rate, layers, fuse):
    model = timm_vit(depth=depth)
    x = images(3)
    method = cv.EViT(model, keep_rate=keep_rate, prune_layers=layers, fuse_token=fuse)
    with torch.no_grad():
        expected, logits = naive_evit(model, x, keep_rate, method.prune_layers, fuse)
    got = method.attribute(x, output="tokens").reshape(3, -1)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert len(expected.unique()) > 1
    # the pruned forward really changes the prediction path (not a re-ranking
    # of the unpruned attention): the naive pruned logits differ from stock
    assert (logits - model(x)).abs().max() > 1e-4


def test_default_layers_and_keep_all():
    assert default_prune_layers(12) == [3, 6, 9]
    assert default_prune_layers(24) == [6, 12, 18]
    model = timm_vit(depth=4)
    got = cv.EViT(model, keep_rate=1.0).attribute(images(2), output="tokens")
    assert torch.equal(got, torch.full_like(got, 4.0))
    got = cv.EViT(model, prune_layers=[]).attribute(images(2), output="tokens")
    assert torch.equal(got, torch.full_like(got, 4.0))


def test_bad_options():
    model = timm_vit()
    with pytest.raises(ValueError, match="keep_rate"):
        cv.EViT(model, keep_rate=0.0)
    with pytest.raises(ValueError, match="layer"):
        cv.EViT(model, prune_layers=[5])
    with pytest.raises(ValueError, match="class token"):
        cv.EViT(timm_vit(class_token=False, global_pool="avg"))
    assert "evit" in cv.attr.list_methods()
