"""TIS against the authors' code (stored outputs, step by step) and against a
naive loop that drops tokens by masking them out of every attention."""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from captum_vit.attr.tis import kmeans
from tests.attr.data import load, tiny_vit
from tests.models import images, timm_vit
from tests.naive import forward

REF = load("tis")
CASES = {"m16_r05": (16, 0.5), "m24_r025_05_t3": (24, [0.25, 0.5])}
KEYS = [(case, i) for case in CASES for i in range(2)]


def naive_tis(model, x, target, masks):
    """Every token subset in its own forward pass; a dropped token is a key
    no query may attend to (the class token then sees the kept tokens only,
    exactly as if the others were removed)."""
    npre = model.num_prefix_tokens
    out = []
    for b in range(x.shape[0]):
        P = model.patch_embed.num_patches
        total = torch.zeros(P, dtype=torch.float64)
        cover = torch.zeros(P, dtype=torch.float64)
        for index in masks[b]:
            for row in index.tolist():
                bias = torch.full((npre + P,), float("-inf"), dtype=x.dtype)
                bias[:npre] = 0
                bias[[npre + j for j in row]] = 0
                with torch.no_grad():
                    logits, _ = forward(
                        model, x[b : b + 1], score_bias=lambda _l, s, m=bias: s + m
                    )
                p = logits.double().softmax(-1)[0, target[b]]
                for j in row:
                    total[j] += p
                    cover[j] += 1
        out.append(torch.where(cover > 0, total / cover.clamp_min(1), 0 * total))
    return torch.stack(out)


@pytest.mark.parametrize("case,i", KEYS)
def test_kmeans_matches_authors(case, i):
    """fast-pytorch-kmeans (as the authors call it), from the same initial
    centroids."""
    points = torch.from_numpy(REF[f"{case}/{i}/activations"]).T
    init = torch.from_numpy(REF[f"{case}/{i}/init"])
    expected = torch.from_numpy(REF[f"{case}/{i}/centroids"])
    got = kmeans(points, points[init])
    assert (got - expected).abs().max() <= 1e-6 * expected.abs().max()


@pytest.mark.parametrize("case,i", KEYS)
def test_steps_match_authors(case, i):
    model = tiny_vit(REF)
    x = torch.from_numpy(REF["x"])[i : i + 1]
    n_masks, ratio = CASES[case]
    key = f"{case}/{i}"
    tis = cv.TIS(model, n_masks=n_masks, tokens_ratio=ratio, internal_batch_size=5)
    logits, z = tis.activations(x)
    expected_z = torch.from_numpy(REF[f"{key}/activations"])
    assert (z - expected_z).abs().max() <= 1e-6 * expected_z.abs().max()
    # their centroids -> our binary masks are theirs
    centroids = torch.from_numpy(REF[f"{key}/centroids"])
    theirs = [
        torch.from_numpy(REF[f"{key}/index{j}"]) for j in range(len(tis.tokens_ratio))
    ]
    for r, index in zip(tis.tokens_ratio, theirs):
        ours = centroids.topk(int(r * z.shape[0]), dim=1).indices
        assert torch.equal(ours, index)
    # their masks -> our scores and saliency are theirs
    target = int(REF[f"{key}/target"])
    if case == "m16_r05":
        assert target == int(logits.argmax())
    scores = tis.scores(x, target, theirs)
    expected = torch.from_numpy(REF[f"{key}/scores"])
    torch.testing.assert_close(torch.cat(scores), expected, rtol=1e-5, atol=1e-7)
    sal = tis.saliency(scores, theirs, z.shape[0])
    expected = torch.from_numpy(REF[f"{key}/saliency"]).double()
    assert (sal - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize(
    "kwargs,ratio",
    [({}, 0.5), ({"reg_tokens": 2}, [0.25, 0.75])],
)
def test_equals_naive_loop(kwargs, ratio):
    model = timm_vit(**kwargs).double()
    x = images(2).double()
    target = torch.tensor([2, 0])
    tis = cv.TIS(model, n_masks=12, tokens_ratio=ratio, internal_batch_size=5)
    masks = [tis.masks(tis.activations(x[b : b + 1])[1]) for b in range(2)]
    expected = naive_tis(model, x, target, masks)
    got = tis.attribute(x, target=target, output="tokens").flatten(1)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_seed_and_mask_count():
    model, x = timm_vit(), images(1)
    z = cv.TIS(model).activations(x)[1]
    # n_masks is capped at the number of activation columns (2 blocks x 32)
    masks = cv.TIS(model, n_masks=1000).masks(z)
    assert len(masks) == 1 and masks[0].shape == (64, 8)
    a = cv.TIS(model, n_masks=16, seed=3).masks(z)[0]
    b = cv.TIS(model, n_masks=16, seed=3).masks(z)[0]
    c = cv.TIS(model, n_masks=16, seed=4).masks(z)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    m1 = cv.TIS(model, n_masks=16, seed=3).attribute(x, output="tokens")
    m2 = cv.TIS(model, n_masks=16, seed=3).attribute(x, output="tokens")
    assert torch.equal(m1, m2)


def test_kmeans_keeps_an_emptied_centroid():
    points = torch.tensor([[0.0], [0.1], [10.0]])
    # the second centroid starts where no point is nearest to it
    got = kmeans(points, torch.tensor([[0.05], [100.0], [10.0]]))
    torch.testing.assert_close(got, torch.tensor([[0.05], [100.0], [10.0]]))


def test_uncovered_patch_scores_zero():
    sal = cv.TIS.saliency([torch.tensor([0.5, 0.25])], [torch.tensor([[0], [0]])], 3)
    torch.testing.assert_close(sal, torch.tensor([0.375, 0.0, 0.0], dtype=sal.dtype))


def test_bad_options():
    model = timm_vit()
    with pytest.raises(ValueError, match="n_masks"):
        cv.TIS(model, n_masks=0)
    with pytest.raises(ValueError, match="tokens_ratio"):
        cv.TIS(model, tokens_ratio=1.5)
    with pytest.raises(ValueError, match="tokens_ratio"):
        cv.TIS(model, tokens_ratio=[])
    with pytest.raises(ValueError, match="max_iter"):
        cv.TIS(model, max_iter=0)
    with pytest.raises(ValueError, match="internal_batch_size"):
        cv.TIS(model, internal_batch_size=0)
