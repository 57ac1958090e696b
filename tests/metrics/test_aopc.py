"""AOPC (Samek et al. 2017) is the deletion curve read differently:
``curve[:, 0] - curve.mean(1)``, checked against a direct implementation."""

import torch

from captum_vit.metrics import deletion_auc
from tests.models import images, timm_vit


def naive_aopc(model, x, amap, target, patch, noise):
    """Samek et al.'s Eq. (12) for one image at a time: remove the most relevant
    region (a patch) per step, replaced by ``noise``, L = all regions."""
    out = []
    for b in range(x.shape[0]):
        gh, gw = amap.shape[-2:]
        order = sorted(range(gh * gw), key=lambda i: (-amap[b].flatten()[i], i))
        xk = x[b].clone()
        with torch.no_grad():
            f0 = model(xk[None])[0, target].item()
        drops = [0.0]
        for i in order:
            r, c = divmod(i, gw)
            sl = (
                slice(None),
                slice(r * patch, (r + 1) * patch),
                slice(c * patch, (c + 1) * patch),
            )
            xk[sl] = noise[b][sl]
            with torch.no_grad():
                drops.append(f0 - model(xk[None])[0, target].item())
        out.append(sum(drops) / len(drops))
    return torch.tensor(out)


def test_aopc_is_expressible_with_the_deletion_curve():
    model = timm_vit()
    x = images(3, seed=9)
    attr = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(2))
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    res = deletion_auc(
        model,
        x,
        attr,
        target=4,
        baseline=noise,
        patch_size=8,
        n_steps=16,
        apply_softmax=False,
    )
    aopc = res.curve[:, 0] - res.curve.mean(dim=1)
    want = naive_aopc(model, x, attr, 4, 8, noise)
    torch.testing.assert_close(aopc, want, rtol=1e-4, atol=1e-4 * want.abs().max())
