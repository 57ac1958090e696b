"""ViT-CX against a naive per-image re-implementation of the authors' steps:
a norm1 hook on the stock model, torchvision's Resize, a pure-Python
complete-linkage clustering, and one masked image per forward pass."""

from __future__ import annotations

import pytest
import torch
from torchvision import transforms

import captum_vit as cv
from tests.models import images, timm_vit
from tests.tolerance import assert_close_to_scale


def naive_complete_linkage(dist, threshold):
    """Merge the closest pair of clusters (max pairwise distance) while that
    distance is below ``threshold``; returns a list of member lists."""
    clusters = [[i] for i in range(len(dist))]
    while len(clusters) > 1:
        best, pair = None, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                d = max(dist[i][j] for i in clusters[a] for j in clusters[b])
                if best is None or d < best:
                    best, pair = d, (a, b)
        if best >= threshold:
            break
        a, b = pair
        clusters[a] = clusters[a] + clusters[b]
        del clusters[b]
    return sorted(sorted(c) for c in clusters)


def norm_rows(m):
    lo, hi = m.min(1, keepdim=True).values, m.max(1, keepdim=True).values
    return (m - lo) / (hi - lo)


def naive_vit_cx(model, x, target, threshold=0.1, std=0.1, seed=0, layer=-1, norm=None):
    """``norm``: the norm whose output gives the masks (its prefix rows
    dropped); default ``model.blocks[layer].norm1``."""
    norm = model.blocks[layer].norm1 if norm is None else norm
    out = []
    for b in range(x.shape[0]):
        img = x[b : b + 1]
        feats = {}
        hook = norm.register_forward_hook(
            lambda m, i, o, feats=feats: feats.setdefault("f", o)
        )
        with torch.no_grad():
            p = model(img).softmax(-1)[0, target[b]]
        hook.remove()
        f = feats["f"][0, model.num_prefix_tokens :]  # (P, D)
        g = int(f.shape[0] ** 0.5)
        fmap = f.T.reshape(-1, g, g)
        H, W = img.shape[-2:]
        fmap = transforms.Resize((H, W))(fmap)
        mask = norm_rows(fmap.reshape(fmap.shape[0], -1))
        sim = torch.nn.functional.cosine_similarity(
            mask[:, None].double(), mask[None].double(), dim=-1
        )
        groups = naive_complete_linkage((1 - sim).tolist(), threshold)
        merged = torch.stack([mask[c].sum(0) for c in groups])
        M = norm_rows(merged).reshape(-1, 1, H, W)
        K = M.shape[0]
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((K, 3, H, W), generator=gen) * std
        scores = []
        with torch.no_grad():
            for k in range(K):
                n = noise[k] * (1 - M[k])
                pm = model((img[0] * M[k] + n)[None]).softmax(-1)[0, target[b]]
                pn = model((img[0] + n)[None]).softmax(-1)[0, target[b]]
                scores.append(pm - pn + p)
        share = M / M.sum(0)
        sal = sum(s * share[k, 0] for k, s in enumerate(scores)) / K
        out.append(sal)
    return torch.stack(out), K


@pytest.mark.parametrize("threshold,layer", [(0.1, -1), (0.3, 0)])
def test_equals_naive_per_image(threshold, layer):
    model = timm_vit()
    x = images(2)
    target = torch.tensor([1, 4])
    expected, K = naive_vit_cx(model, x, target, threshold, layer=layer)
    method = cv.ViTCX(
        model, target_layer=layer, distance_threshold=threshold, internal_batch_size=7
    )
    got = method.attribute(x, target=target)
    assert got.shape == x.shape
    assert_close_to_scale(got[:, 0], expected, 1e-3)
    assert 1 < K < model.embed_dim  # the clustering merged some masks
    tokens = method.attribute(x, target=target, output="tokens")
    pooled = expected.reshape(2, 4, 8, 4, 8).mean((2, 4))
    assert_close_to_scale(tokens, pooled, 1e-3)


def test_seeded_and_threshold_changes_masks():
    model = timm_vit()
    x = images(1)
    a = cv.ViTCX(model, seed=1).attribute(x, target=0)
    b = cv.ViTCX(model, seed=1).attribute(x, target=0)
    c = cv.ViTCX(model, seed=2).attribute(x, target=0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    from captum_vit.attr.vit_cx import cluster_masks

    masks, _ = cv.ViTCX(model).masks(x)
    flat = masks[0].flatten(1)
    assert cluster_masks(flat, 0.0).shape[0] == flat.shape[0]
    assert cluster_masks(flat, 2.0).shape[0] == 1


def test_bad_options():
    model = timm_vit()
    with pytest.raises(ValueError, match="distance_threshold"):
        cv.ViTCX(model, distance_threshold=-0.1)
    with pytest.raises(ValueError, match="layer"):
        cv.ViTCX(model, target_layer=7)
    with pytest.raises(ValueError, match="internal_batch_size"):
        cv.ViTCX(model, internal_batch_size=0)
    assert "vit_cx" in cv.attr.list_methods()
