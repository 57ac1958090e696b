"""ROAD against pytorch-grad-cam 1.5.7 on the same inputs.

The reference values are frozen in ``data/road_reference.npz``, produced by
``data/make_road_reference.py`` (grad-cam 1.5.7 in a scratch venv that sees the
project's torch 2.14.1 and scipy; see the script): a small CNN, images of 16 x 16
and 20 x 12, three maps (continuous, four levels with ties at the thresholds,
constant along rows), every percentile 10..90 of ``ROADMostRelevantFirst`` /
``ROADLeastRelevantFirst`` with softmax and raw targets, without noise and with
the default noise after ``torch.manual_seed(123)``, the imputed images, and
``ROADCombined``.
"""

import os

import numpy as np
import pytest
import torch

from captum_vit.metrics import MetricContext, get_metric, road
from captum_vit.metrics._road import _linear_imputation, _removed
from tests.metrics._metric_models import small_cnn

DATA = os.path.join(os.path.dirname(__file__), "data", "road_reference.npz")
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
SEED = 123


@pytest.fixture(scope="module")
def ref():
    d = dict(np.load(DATA))
    state = {k[2:]: torch.from_numpy(v) for k, v in d.items() if k.startswith("w.")}
    return d, small_cnn(4, state)


def _inputs(d, name):
    x = torch.from_numpy(d[f"{name}.x"])
    return x, torch.from_numpy(d[f"{name}.cams"]), torch.from_numpy(d[f"{name}.target"])


def _fraction(p):
    return 1 - p / 100


@pytest.mark.parametrize("name", ["a", "b"])
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_imputed_images_equal_grad_cams(ref, name, order):
    d, _ = ref
    x, cams, _ = _inputs(d, name)
    C = x.shape[1]
    for p in PERCENTILES:
        want = d[f"{name}.imputed.{order}.{p}"]
        for b in range(x.shape[0]):
            removed = _removed(cams[b].numpy(), _fraction(p), order)
            got = x[b].numpy().copy().reshape(C, -1)
            got[:, np.flatnonzero(removed)] = _linear_imputation(
                x[b].numpy(), removed
            ).T
            np.testing.assert_allclose(got.reshape(want[b].shape), want[b], atol=2e-6)


@pytest.mark.parametrize("name", ["a", "b"])
@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("kind", ["softmax", "raw"])
def test_score_changes_equal_grad_cams(ref, name, order, kind):
    d, model = ref
    x, cams, target = _inputs(d, name)
    sm = kind == "softmax"
    fracs = [_fraction(p) for p in PERCENTILES]
    clean = d[f"{name}.{kind}.{order}.clean"]
    res = road(model, x, cams, target, order, fracs, noise=0.0, apply_softmax=sm)
    scale = np.abs(clean).max()
    np.testing.assert_allclose(res.curve.numpy(), clean, atol=1e-5 * scale)
    # grad-cam's ROAD...Average is the mean over the percentiles
    np.testing.assert_allclose(res.change.numpy(), clean.mean(1), atol=1e-5 * scale)
    np.testing.assert_allclose(res.fractions.numpy(), fracs)
    # with noise: grad-cam seeded with torch.manual_seed(SEED) before each call
    noisy = d[f"{name}.{kind}.{order}.noise"]
    got = np.stack(
        [
            road(model, x, cams, target, order, [f], seed=SEED, apply_softmax=sm)
            .curve[:, 0]
            .numpy()
            for f in fracs
        ],
        1,
    )
    np.testing.assert_allclose(got, noisy, atol=1e-5 * np.abs(noisy).max())
    assert not np.allclose(noisy, clean)  # the noise matters


def test_noisy_imputation_equals_grad_cams(ref):
    d, model = ref
    x, cams, target = _inputs(d, "a")
    for order in ("morf", "lerf"):
        for p in (20, 80):
            want = d[f"a.imputed_noise.{order}.{p}"]
            gen = torch.Generator().manual_seed(SEED)
            seen = []
            spy = lambda inp, seen=seen: (seen.append(inp.clone()), model(inp))[1]  # noqa: E731
            road(spy, x, cams, target, order, [_fraction(p)], generator=gen)
            np.testing.assert_allclose(seen[-1].numpy(), want, atol=2e-6)


def test_registry_road_is_grad_cams_road_combined(ref):
    d, model = ref
    x, cams, target = _inputs(d, "a")
    ctx = MetricContext(
        forward_func=model, inputs=x, attributions=cams, target=target, seed=SEED
    )
    out = get_metric("road").compute(ctx).values
    combined = (out["road_lerf"] - out["road_morf"]) / 2
    want = d["a.softmax.combined"]
    np.testing.assert_allclose(combined.numpy(), want, atol=1e-5 * np.abs(want).max())
    assert get_metric("road").better("road_morf") == "lower"
    assert get_metric("road").better("road_lerf") == "higher"


def test_fully_removed_image_is_zero_and_batching_does_not_matter(ref):
    _, model = ref
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 10, 10, generator=g)
    const = torch.ones(1, 10, 10)
    removed = _removed(const[0].numpy(), 0.5, "morf")  # ties: all removed
    assert removed.all()
    assert (_linear_imputation(x[0].numpy(), removed) == 0).all()
    amap = torch.rand(3, 10, 10, generator=g)
    full = road(model, x, amap, 1, noise=0.0).curve
    part = road(model, x[1:], amap[1:], 1, noise=0.0, internal_batch_size=1).curve
    torch.testing.assert_close(full[1:], part)


def test_imputation_is_the_neighbour_mean():
    g = np.random.default_rng(0)
    img = g.standard_normal((2, 6, 7))
    removed = g.random((6, 7)) < 0.4
    removed[0, 0] = True  # a corner: three neighbours
    filled = img.copy().reshape(2, -1)
    filled[:, np.flatnonzero(removed)] = _linear_imputation(img, removed).T
    filled = filled.reshape(img.shape)
    weights = {
        (dr, dc): (1 / 6 if dr == 0 or dc == 0 else 1 / 12)
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
        if (dr, dc) != (0, 0)
    }
    for r, c in zip(*np.nonzero(removed)):
        num, den = 0.0, 0.0
        for (dr, dc), w in weights.items():
            if 0 <= r + dr < 6 and 0 <= c + dc < 7:
                num = num + w * filled[:, r + dr, c + dc]
                den += w
        np.testing.assert_allclose(filled[:, r, c], num / den, atol=1e-10)


def test_bad_arguments(ref):
    _, model = ref
    x, a = torch.randn(1, 3, 8, 8), torch.rand(1, 8, 8)
    with pytest.raises(ValueError, match="order"):
        road(model, x, a, 0, order="random")
    with pytest.raises(ValueError, match="fractions"):
        road(model, x, a, 0, fractions=[0.0, 0.5])
    with pytest.raises(ValueError, match="fractions"):
        road(model, x, a, 0, fractions=[])
    with pytest.raises(ValueError, match="noise"):
        road(model, x, a, 0, noise=-1.0)
