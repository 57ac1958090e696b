import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from captum.metrics import infidelity, sensitivity_max

from captum_vit.metrics import patch_baseline_perturb_func, patch_noise_perturb_func
from tests.metrics._metric_models import SumModel


@pytest.fixture(scope="module")
def vit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5
    ).eval()


def test_patch_noise_is_constant_per_patch_and_seeded():
    x = torch.zeros(2, 3, 8, 8)
    f = patch_noise_perturb_func(4, std=1.0, seed=0)
    noise, perturbed = f(x)
    assert torch.equal(perturbed, x - noise)
    blocks = noise.reshape(2, 3, 2, 4, 2, 4)
    assert torch.equal(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    assert noise.std() > 0.3
    again, _ = patch_noise_perturb_func(4, std=1.0, seed=0)(x)
    assert torch.equal(noise, again)
    s = patch_noise_perturb_func(4, metric="sensitivity", seed=0)(x, 0.1)
    assert s.abs().max() <= 0.1 and s.abs().max() > 0
    pair = f((x, x[:, :1]))
    assert len(pair) == 2 and pair[0][1].shape == (2, 1, 8, 8)


def test_patch_baseline_replaces_whole_patches():
    x = torch.rand(4, 3, 8, 8) + 1.0
    f = patch_baseline_perturb_func(2, fraction=0.5, baseline=0.0, seed=1)
    pert, perturbed = f(x)
    assert torch.allclose(perturbed, x - pert)
    zero = (perturbed == 0).reshape(4, 3, 4, 2, 4, 2).all(dim=(1, 3, 5))
    kept = (perturbed == x).reshape(4, 3, 4, 2, 4, 2).all(dim=(1, 3, 5))
    assert torch.equal(zero, ~kept)
    assert 0.2 < zero.float().mean() < 0.8
    # Captum's `baselines` argument replaces the default baseline
    _, with_b = f(x, torch.full_like(x, 7.0))
    assert set(with_b.unique().tolist()) - set(x.unique().tolist()) == {7.0}
    black = patch_baseline_perturb_func(
        2, fraction=1.0, baseline="black", mean=[0.5] * 3, std=[0.5] * 3
    )
    assert (black(x)[1] == -1).all()
    s = patch_baseline_perturb_func(2, fraction=1.0, metric="sensitivity")(x)
    assert (s == 0).all()


def test_infidelity_is_zero_for_the_gradient_of_a_linear_model():
    # f(x) - f(x - I) = w . I exactly, so the gradient has zero infidelity.
    w = torch.randn(2, 3, 8, 8)
    model = SumModel(w)
    x = torch.randn(3, 3, 8, 8)
    grad = w[1].expand_as(x)
    for f in (
        patch_noise_perturb_func(4, std=0.5, seed=0),
        patch_baseline_perturb_func(4, fraction=0.5, seed=0),
    ):
        inf = infidelity(model, f, x, grad, target=1, n_perturb_samples=6)
        assert torch.allclose(inf, torch.zeros(3), atol=1e-6)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_captum_metrics_on_a_tiny_vit_with_integrated_gradients(vit):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    target = vit(x).argmax(1)
    ig = IntegratedGradients(vit)
    attr = ig.attribute(x, target=target, n_steps=8)
    assert attr.shape == x.shape
    values = []
    for make in (
        lambda: patch_noise_perturb_func(8, std=0.1, seed=0),
        lambda: patch_baseline_perturb_func(8, fraction=0.25, seed=0),
    ):
        inf = infidelity(vit, make(), x, attr, target=target, n_perturb_samples=4)
        assert inf.shape == (2,) and torch.isfinite(inf).all() and (inf >= 0).all()
        again = infidelity(vit, make(), x, attr, target=target, n_perturb_samples=4)
        assert torch.allclose(inf, again)
        values.append(inf)
    sens = sensitivity_max(
        Saliency(vit).attribute,
        x,
        perturb_func=patch_noise_perturb_func(8, metric="sensitivity", seed=0),
        perturb_radius=0.05,
        n_perturb_samples=3,
        target=target,
    )
    assert sens.shape == (2,) and torch.isfinite(sens).all() and (sens >= 0).all()
    sens_b = sensitivity_max(
        Saliency(vit).attribute,
        x,
        perturb_func=patch_baseline_perturb_func(
            8, fraction=0.1, metric="sensitivity", seed=0
        ),
        n_perturb_samples=2,
        target=target,
    )
    assert torch.isfinite(sens_b).all()


def test_perturb_func_errors():
    with pytest.raises(ValueError, match="metric"):
        patch_noise_perturb_func(4, metric="infidelty")
    with pytest.raises(ValueError, match="patch_size"):
        patch_noise_perturb_func(0)
    with pytest.raises(ValueError, match="fraction"):
        patch_baseline_perturb_func(4, fraction=1.5)
    with pytest.raises(ValueError, match="does not divide"):
        patch_noise_perturb_func(3)(torch.zeros(1, 3, 8, 8))
