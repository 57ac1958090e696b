"""The shared pixel <-> token maps (``captum_vit._maps``) and their border rule,
through the private helpers and the public names that use them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import captum_vit as cv
from captum_vit._maps import min_max, pixels_to_tokens, tokens_to_pixels
from tests.models import timm_vit


def test_tiling_sizes_are_plain_block_maps():
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 8, 12, generator=g, dtype=torch.float64)
    naive = torch.zeros(2, 2, 3, dtype=torch.float64)
    for i in range(2):
        for j in range(3):
            naive[:, i, j] = pixels[:, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].sum(
                dim=(1, 2, 3)
            )
    torch.testing.assert_close(pixels_to_tokens(pixels, (2, 3), 4), naive)
    torch.testing.assert_close(
        pixels_to_tokens(pixels, (2, 3), (4, 4), reduce="mean"), naive / 48
    )
    grid = torch.randn(2, 2, 3, generator=g)
    near = tokens_to_pixels(grid, (8, 12), 4, channels=3, mode="nearest")
    assert near.shape == (2, 3, 8, 12)
    assert torch.equal(
        near, F.interpolate(grid[:, None], scale_factor=4).expand(-1, 3, -1, -1)
    )
    bil = tokens_to_pixels(grid, (8, 12), 4)
    ref = F.interpolate(grid[:, None], scale_factor=4, mode="bilinear")
    assert torch.equal(bil, ref)


def test_dropped_border_pixels_belong_to_no_token():
    # 10 x 10 pixels, 4 x 4 patches, a 2 x 2 grid: rows/cols 8 and 9 are never seen
    pixels = torch.ones(1, 1, 10, 10)
    pixels[..., 8:, :] = 100.0
    pixels[..., :, 8:] = 100.0
    assert pixels_to_tokens(pixels, (2, 2), 4).tolist() == [
        [[16.0, 16.0], [16.0, 16.0]]
    ]
    up = tokens_to_pixels(torch.ones(1, 2, 2), (10, 10), 4, mode="nearest")
    assert up[0, 0, :8, :8].eq(1).all() and up[0, 0, 8:].eq(0).all()
    assert up[0, 0, :, 8:].eq(0).all()


def test_padded_border_patch_holds_the_image_pixels_it_covers():
    # 10 x 10 pixels, 4 x 4 patches, a padded 3 x 3 grid: the last row and
    # column of patches cover 2 image pixels each
    pixels = torch.arange(100.0).reshape(1, 10, 10)
    tok = pixels_to_tokens(pixels, (3, 3), 4)
    assert tok[0, 2, 2] == pixels[0, 8:, 8:].sum()
    assert tok[0, 0, 2] == pixels[0, :4, 8:].sum()
    mean = pixels_to_tokens(pixels, (3, 3), 4, reduce="mean")
    assert mean[0, 2, 2] == pixels[0, 8:, 8:].mean()
    assert mean[0, 1, 1] == pixels[0, 4:8, 4:8].mean()


@pytest.mark.parametrize(
    "size,grid", [((10, 10), (2, 2)), ((10, 10), (3, 3)), ((8, 12), (2, 3))]
)
def test_nearest_round_trip_for_every_border(size, grid):
    g = torch.randn(3, *grid, dtype=torch.float64)
    up = tokens_to_pixels(g, size, 4, channels=2, mode="nearest")
    torch.testing.assert_close(pixels_to_tokens(up, grid, 4, reduce="mean"), g)


def test_nearest_keeps_booleans():
    m = torch.tensor([[[True, False], [False, True]]])
    up = tokens_to_pixels(m, (4, 4), 2, mode="nearest")
    assert up.dtype == torch.bool and up[0, 0].sum() == 8


def test_reduce_must_be_sum_or_mean():
    with pytest.raises(ValueError, match="reduce must be"):
        pixels_to_tokens(torch.ones(1, 4, 4), (2, 2), 2, reduce="max")


def test_min_max_per_map():
    x = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    out = min_max(x)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert out[1].eq(0).all()  # constant map
    nan = min_max(torch.tensor([[0.0, float("nan"), 1.0]]))
    assert nan.eq(0).all()
    assert min_max(x.double()).dtype == torch.float64


def test_lrp_tokens_on_a_padded_model_sum_the_relevance_per_patch():
    # a timm model with dynamic_img_pad: 36 x 36 images make a 5 x 5 grid of 8 x 8
    # patches whose last row/column covers 4 image pixels (this crashed before)
    model = timm_vit(dynamic_img_size=True, dynamic_img_pad=True)
    x = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(0))
    lrp = cv.LRP(model)
    tokens = lrp.attribute(x, target=1, output="tokens")
    rel = lrp.attribute(x, target=1).double().sum(1)
    assert tokens.shape == (2, 5, 5)
    naive = torch.stack(
        [
            torch.stack(
                [
                    rel[:, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8].sum((1, 2))
                    for j in range(5)
                ],
                1,
            )
            for i in range(5)
        ],
        1,
    )
    scale = naive.abs().max()
    torch.testing.assert_close(
        tokens.double() / scale, naive / scale, atol=1e-6, rtol=0
    )
    torch.testing.assert_close(cv.to_tokens(lrp.attribute(x, target=1), model), tokens)


def test_token_methods_round_trip_through_to_tokens_on_a_padded_model():
    model = timm_vit(dynamic_img_size=True, dynamic_img_pad=True)
    x = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(1))
    method = cv.AttentionRollout(model, interpolate_mode="nearest")
    tokens = method.attribute(x, output="tokens")
    pixels = method.attribute(x)
    torch.testing.assert_close(cv.to_tokens(pixels, model, reduce="mean"), tokens)
    assert torch.equal(
        cv.attr.tokens_to_pixels(tokens, (36, 36), (8, 8), 3, mode="nearest"), pixels
    )
