import pytest
import torch

from captum_vit.metrics import effective_complexity


def test_effective_complexity_by_hand():
    a = torch.tensor([[[0.0, 1.0], [0.5, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert effective_complexity(a).tolist() == [2, 0]
    assert effective_complexity(a, eps=0.6).tolist() == [1, 0]
    assert effective_complexity(-a, abs=False).tolist() == [0, 0]
    # not normalised: absolute threshold
    assert effective_complexity(a * 10, eps=4.0, normalize=False).tolist() == [2, 0]


def test_effective_complexity_channels_and_patches():
    a = torch.zeros(1, 3, 4, 4)
    a[0, :, 0, 0] = 1.0  # one pixel, three channels -> one feature
    a[0, 0, 3, 3] = 0.5
    assert effective_complexity(a).tolist() == [2]
    assert effective_complexity(a, patch_size=2).tolist() == [2]
    assert effective_complexity(a, patch_size=4).tolist() == [1]
    with pytest.raises(ValueError, match="eps"):
        effective_complexity(a, eps=-1.0)
    with pytest.raises(ValueError, match="shape"):
        effective_complexity(torch.ones(4))
