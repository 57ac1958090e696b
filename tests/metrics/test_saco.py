"""SaCo (Wu et al., CVPR 2024) against a naive re-implementation of the paper's
Algorithm 1, and the paper's point: a random map scores about 0 on SaCo while it
scores nearly as well as a faithful map on cumulative deletion."""

import numpy as np
import pytest
import torch

from captum_vit.metrics import deletion_auc, saco
from captum_vit.metrics._utils import _to_pixel_map
from tests.models import images, timm_vit


def naive_saco(model, x, amap, target, K=10, patch=None):
    """Algorithm 1 of the paper, one image at a time, loops and all."""
    out = []
    for b in range(x.shape[0]):
        a = amap[b].double()  # pixels, or one value per patch
        flat = a.reshape(-1).tolist()
        N = len(flat)
        order = sorted(range(N), key=lambda i: (-flat[i], i))
        # G_k = {p : (k - 1) HW / K <= rank(p) < k HW / K}, in exact arithmetic
        groups = [
            [i for r, i in enumerate(order) if k * N <= r * K < (k + 1) * N]
            for k in range(K)
        ]
        with torch.no_grad():
            p0 = torch.softmax(model(x[b : b + 1]).double(), 1)[0, target[b]].item()
        s, d = [], []
        for g in groups:
            s.append(sum(flat[i] for i in g))
            xp = x[b].clone()
            fill = xp.mean(dim=(1, 2))
            for i in g:
                if patch:
                    r, c = divmod(i, a.shape[1])
                    xp[:, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = (
                        fill[:, None, None]
                    )
                else:
                    r, c = divmod(i, a.shape[1])
                    xp[:, r, c] = fill
            with torch.no_grad():
                p = torch.softmax(model(xp[None]).double(), 1)[0, target[b]].item()
            d.append(p0 - p)
        F = total = 0.0
        for i in range(K - 1):
            for j in range(i + 1, K):
                w = s[i] - s[j] if d[i] >= d[j] else -(s[i] - s[j])
                F += w
                total += abs(w)
        out.append(F / total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture(scope="module")
def vit():
    return timm_vit()


@pytest.mark.parametrize("patch", [None, 8])
def test_saco_equals_the_papers_algorithm(vit, patch):
    x = images(3, seed=2)
    g = torch.Generator().manual_seed(3)
    attr = torch.randn(3, 4, 4, generator=g)  # a token grid, upsampled for pixels
    target = [0, 3, 1]
    res = saco(vit, x, attr, target=target, patch_size=patch)
    amap = attr if patch else _to_pixel_map(attr, (32, 32))
    ref = naive_saco(vit, x, amap, target, patch=patch)
    np.testing.assert_allclose(res.coefficient.double(), ref, atol=1e-5)
    assert res.salience.shape == res.prediction_change.shape == (3, 10)
    # the groups partition the map
    total = amap.double().sum(dim=(1, 2))
    np.testing.assert_allclose(res.salience.double().sum(1), total, rtol=1e-5)


def test_saco_is_batch_independent_and_bounded(vit):
    x = images(4, seed=5)
    attr = torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(1))
    full = saco(vit, x, attr, target=2, n_groups=5).coefficient
    part = saco(vit, x[1:3], attr[1:3], target=2, n_groups=5).coefficient
    torch.testing.assert_close(full[1:3], part)
    assert ((full >= -1) & (full <= 1)).all()


def test_constant_map_gives_nan_and_bad_groups_raise(vit):
    x = images(2)
    res = saco(vit, x, torch.ones(2, 4, 4), target=0)
    assert torch.isnan(res.coefficient).all()
    with pytest.raises(ValueError, match="n_groups"):
        saco(vit, x, torch.rand(2, 4, 4), target=0, n_groups=1)
    with pytest.raises(ValueError, match="n_groups"):
        saco(vit, x, torch.rand(2, 4, 4), target=0, n_groups=17, patch_size=8)
    with pytest.raises(TypeError, match="n_groups"):
        saco(vit, x, torch.rand(2, 4, 4), target=0, n_groups=2.0)


class Evidence(torch.nn.Module):
    """Class 0 wins by a margin that grows steeply with the weighted evidence
    ``sum_p w_p x_p`` of an 8 x 8 image: losing any tenth of the evidence
    hurts, losing a third of it is fatal."""

    def __init__(self, w, alpha, c):
        super().__init__()
        self.register_buffer("w", w)
        self.alpha, self.c = alpha, c

    def forward(self, x):
        e = (x[:, 0] * self.w).sum(dim=(1, 2))
        z = self.alpha * (e - self.c)
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def test_random_map_fails_saco_but_looks_good_on_cumulative_deletion():
    g = torch.Generator().manual_seed(0)
    w = torch.exp(torch.randn(8, 8, generator=g))
    w = w / w.sum()
    model = Evidence(w, alpha=40.0, c=0.9)
    n = 64
    x = torch.ones(n, 1, 8, 8)
    oracle = w.expand(n, 8, 8)  # the model's exact contribution w_p x_p
    reverse = -oracle  # least relevant first
    random = torch.rand(n, 8, 8, generator=g)

    def sc(a):  # 8 groups of 8 pixels: equal sizes (the paper's K = 10 is not)
        res = saco(model, x, a, target=0, baseline="zero", n_groups=8)
        return res.coefficient.mean().item()

    def dele(a):
        return deletion_auc(model, x, a, target=0, n_steps=10).auc.mean().item()

    assert sc(oracle) == pytest.approx(1.0)
    assert sc(reverse) < -0.9
    assert abs(sc(random)) < 0.15  # no better than chance
    d_oracle, d_random, d_reverse = dele(oracle), dele(random), dele(reverse)
    assert d_oracle < d_random < d_reverse
    # cumulative deletion puts the random map close to the faithful one
    assert d_random - d_oracle < 0.25 * (d_reverse - d_oracle)
