import pytest
import torch
import torch.nn.functional as F

from captum_vit.metrics._utils import (
    _ranks,
    _resolve_baseline,
    _to_pixel_map,
    _to_token_map,
)


def test_pixel_map_accepts_every_captum_layout():
    a = torch.randn(2, 3, 8, 8)
    expected = a.sum(1)
    assert torch.equal(_to_pixel_map(a, (8, 8)), expected)
    assert torch.equal(_to_pixel_map(expected[:, None], (8, 8)), expected)
    assert torch.equal(_to_pixel_map(expected, (8, 8)), expected)


def test_token_grid_is_upsampled_bilinearly_like_chefer():
    grid = torch.randn(2, 2, 2)
    got = _to_pixel_map(grid, (8, 8))
    # Chefer et al.: F.interpolate(Res, scale_factor=16, mode="bilinear")
    ref = F.interpolate(grid[:, None], scale_factor=4, mode="bilinear")[:, 0]
    assert torch.allclose(got, ref)


def test_token_map_sums_patches_and_keeps_grids():
    a = torch.arange(16.0).reshape(1, 1, 4, 4)
    tok = _to_token_map(a, (4, 4), 2)
    assert tok.tolist() == [
        [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    ]
    grid = torch.randn(1, 2, 2)
    assert torch.equal(_to_token_map(grid, (4, 4), 2), grid)


def test_bad_shapes_are_value_errors():
    with pytest.raises(ValueError, match="spatial size"):
        _to_pixel_map(torch.randn(1, 5, 7), (8, 8))
    with pytest.raises(ValueError, match="batch size"):
        _to_pixel_map(torch.randn(3, 8, 8), (8, 8), batch_size=2)
    with pytest.raises(ValueError, match="shape"):
        _to_pixel_map(torch.randn(8, 8), (8, 8))
    with pytest.raises(ValueError, match="does not divide"):
        _to_token_map(torch.randn(1, 8, 8), (8, 8), 3)


def test_black_baseline_in_normalised_space():
    x = torch.zeros(1, 3, 2, 2)
    b = _resolve_baseline("black", x, mean=[0.5, 0.4, 0.3], std=[0.5, 0.2, 0.1])
    assert torch.allclose(b[0, :, 0, 0], torch.tensor([-1.0, -2.0, -3.0]))
    assert torch.equal(_resolve_baseline("black", x), torch.zeros_like(x))
    m = _resolve_baseline("mean", torch.arange(8.0).reshape(1, 2, 2, 2), None, None)
    assert m[0, :, 0, 0].tolist() == [1.5, 5.5]
    with pytest.raises(ValueError, match="unknown baseline"):
        _resolve_baseline("blak", x)
    with pytest.raises(ValueError, match="broadcast"):
        _resolve_baseline(torch.zeros(5), x)


def test_ranks_are_stable():
    r = _ranks(torch.tensor([[1.0, 3.0, 3.0, 0.0]]))
    assert r.tolist() == [[2, 0, 1, 3]]
