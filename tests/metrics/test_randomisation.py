"""The model-randomisation sanity check (Adebayo et al. 2018): the cascade, the
copies, the similarity measures against naive ones, and that the user's model
is never touched."""

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from scipy.stats import spearmanr

from captum_vit.metrics import (
    MetricContext,
    cascade_layers,
    get_metric,
    model_randomisation,
    randomised_copy,
    spearman,
    ssim,
)
from tests.models import hf_vit_from_timm, images, timm_vit, torchvision_vit_from_timm

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require")


@pytest.fixture(scope="module")
def vit():
    return timm_vit()


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _saliency(model):
    return lambda x, target=None: Saliency(model).attribute(x, target=target).abs()


def test_cascade_of_the_three_families(vit):
    names = ["head", "blocks.1", "blocks.0", "embedding"]
    assert [n for n, _ in cascade_layers(vit)] == names
    hf = [n for n, _ in cascade_layers(hf_vit_from_timm(vit))]
    assert hf == ["head", "vit.layers.1", "vit.layers.0", "embedding"]
    tv = [n for n, _ in cascade_layers(torchvision_vit_from_timm(vit))]
    assert tv == [
        "head",
        "encoder.layers.encoder_layer_1",
        "encoder.layers.encoder_layer_0",
        "embedding",
    ]
    stages = cascade_layers(vit)
    params = [p for _, ps in stages for p in ps]
    assert sorted(params) == sorted(n for n, _ in vit.named_parameters())
    assert "head.weight" in stages[0][1] and "norm.weight" in stages[0][1]
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight"} <= set(stages[-1][1])
    with pytest.raises(ValueError, match="no indexed blocks"):
        cascade_layers(torch.nn.Linear(3, 2))


def test_randomised_copy_changes_exactly_the_top_stages(vit):
    before = _state(vit)
    copy = randomised_copy(vit, 2, seed=1)
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
    stages = cascade_layers(vit)
    changed = {p for _, ps in stages[:2] for p in ps}
    for name, p in copy.named_parameters():
        same = torch.equal(p, before[name])
        if name in changed and not name.startswith("norm"):
            assert not same, name
        elif name not in changed:
            assert same, name
    # LayerNorms are reset to their initialisation (ones, zeros)
    assert torch.equal(copy.norm.weight, torch.ones_like(copy.norm.weight))
    again = randomised_copy(vit, 2, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(copy.parameters(), again.parameters()))
    other = randomised_copy(vit, 2, seed=2)
    assert not torch.equal(copy.head.weight, other.head.weight)
    assert copy.training == vit.training


def test_spearman_and_ssim_equal_the_naive_definitions():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 9, 10, generator=g)
    b = a + 0.5 * torch.rand(3, 9, 10, generator=g)
    b[2] = torch.round(b[2] * 3)  # ties: average ranks
    rho = spearman(a, b)
    for i in range(3):
        want = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0]
        assert rho[i].item() == pytest.approx(want, abs=1e-6)
    x, y = a.double().numpy(), (b / b.amax()).double().numpy()
    got = ssim(torch.from_numpy(x), torch.from_numpy(y))
    for i in range(3):  # Wang et al. 2004 on every 7 x 7 window inside the image
        vals = []
        for r in range(9 - 6):
            for c in range(10 - 6):
                u = x[i, r : r + 7, c : c + 7].ravel()
                v = y[i, r : r + 7, c : c + 7].ravel()
                cov = np.cov(u, v)  # sample (co)variances, ddof 1
                c1, c2 = 0.01**2, 0.03**2
                vals.append(
                    (2 * u.mean() * v.mean() + c1)
                    * (2 * cov[0, 1] + c2)
                    / (
                        (u.mean() ** 2 + v.mean() ** 2 + c1)
                        * (cov[0, 0] + cov[1, 1] + c2)
                    )
                )
        assert got[i].item() == pytest.approx(np.mean(vals), abs=1e-6)
    assert ssim(a, a).tolist() == pytest.approx([1.0] * 3)


def test_cascade_maps_are_the_copies_maps(vit):
    x = images(2, seed=4)
    res = model_randomisation(vit, _saliency, x, target=1, seed=3)
    assert res.layers == ["head", "blocks.1", "blocks.0", "embedding"]
    assert res.spearman.shape == res.ssim.shape == (2, 4)
    ref = _saliency(vit)(x, target=1).sum(1)
    for k in (1, 3):
        m = _saliency(randomised_copy(vit, k, seed=3))(x, target=1).sum(1)
        want = spearman(ref, m)
        torch.testing.assert_close(res.spearman[:, k - 1], want)


def test_a_model_independent_map_fails_and_a_gradient_passes(vit):
    x = images(3, seed=6)

    def image_map(model):  # ignores the model, like the edge-detector baseline
        return lambda inp, target=None: inp.abs().sum(1, keepdim=True)

    fixed = model_randomisation(vit, image_map, x, target=0)
    assert torch.allclose(fixed.spearman, torch.ones_like(fixed.spearman))
    assert torch.allclose(fixed.ssim, torch.ones_like(fixed.ssim))
    grad = model_randomisation(vit, _saliency, x, target=0)
    assert (grad.spearman[:, -1] < 0.5).all()  # fully randomised: unrelated maps
    assert grad.ssim[:, -1].mean() < 0.5


def test_user_model_untouched_also_after_an_error(vit):
    before = _state(vit)
    x = images(1)
    calls = []

    def failing(model):
        calls.append(model)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return _saliency(model)

    with pytest.raises(RuntimeError, match="boom"):
        model_randomisation(vit, failing, x, target=0)
    assert calls[0] is vit and all(m is not vit for m in calls[1:])
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())


def test_registry_metric_and_errors(vit):
    x = images(2, seed=8)
    a = _saliency(vit)(x, target=2)
    ctx = MetricContext(
        forward_func=vit,
        inputs=x,
        attributions=a,
        target=2,
        model=vit,
        method_factory=_saliency,
        seed=5,
    )
    spec = get_metric("model_randomisation")
    assert spec.needs == ("model", "method") and spec.seeded
    out = spec.compute(ctx).values
    res = model_randomisation(vit, _saliency, x, 2, attributions=a, seed=5)
    torch.testing.assert_close(out["rand_spearman"], res.spearman.mean(1))
    torch.testing.assert_close(out["rand_ssim"], res.ssim.mean(1))
    with pytest.raises(ValueError, match="needs method"):
        spec.compute(ctx._replace(method_factory=None))
    with pytest.raises(ValueError, match="n_layers"):
        model_randomisation(vit, _saliency, x, 2, n_layers=5)


def test_a_copy_made_while_another_thread_traces_runs_its_own_weights(vit):
    """A copy asked for while another thread has its temporary forwards on the
    model waits for them to go and runs its own weights."""
    import threading

    from captum_vit import adapters

    x = images(2, seed=3)
    clean = randomised_copy(vit, 2, seed=0)
    entered, release, out = threading.Event(), threading.Event(), {}

    def explain():  # what a method does in another thread
        with adapters.get(vit).trace():
            entered.set()
            release.wait(10)

    def copy_it():
        out["copy"] = randomised_copy(vit, 2, seed=0)

    tracer = threading.Thread(target=explain)
    tracer.start()
    assert entered.wait(10)
    copier = threading.Thread(target=copy_it)
    copier.start()
    copier.join(0.5)
    assert copier.is_alive()  # waits for the other thread's surgery
    release.set()
    tracer.join(10)
    copier.join(10)
    inside = out["copy"]
    assert not any("forward" in vars(m) for m in inside.modules())
    with torch.no_grad():
        torch.testing.assert_close(inside(x), clean(x))
        assert not torch.allclose(inside(x), vit(x))
