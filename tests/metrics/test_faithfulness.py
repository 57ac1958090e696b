import numpy as np
import pytest
import torch
import torch.nn.functional as F

from captum_vit.metrics import (
    deletion_auc,
    faithfulness_correlation,
    insertion_auc,
    perturbation_test,
    sensitivity_n,
)
from tests.metrics._metric_models import RegionModel, SumModel
from tests.tolerance import assert_close_to_scale


def _sum_model():
    return SumModel(torch.ones(1, 1, 2, 2))


X4 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])


def test_deletion_by_hand():
    # logit = sum of pixels; removing 4, 3, 2, 1 in turn: 10, 6, 3, 1, 0
    res = deletion_auc(_sum_model(), X4, X4, target=0, n_steps=4, apply_softmax=False)
    assert res.curve.tolist() == [[10.0, 6.0, 3.0, 1.0, 0.0]]
    assert res.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # trapezoid: 0.25 * (8 + 4.5 + 2 + 0.5)
    assert res.auc.item() == pytest.approx(3.75)


def test_insertion_by_hand():
    res = insertion_auc(
        _sum_model(), X4, X4, target=0, n_steps=4, baseline="zero", apply_softmax=False
    )
    assert res.curve.tolist() == [[0.0, 4.0, 7.0, 9.0, 10.0]]
    assert res.auc.item() == pytest.approx(0.25 * (2 + 5.5 + 8 + 9.5))


def test_deletion_step_size_and_patches():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    m = SumModel(torch.ones(1, 1, 4, 4))
    res = deletion_auc(m, x, x, target=0, step_size=6, apply_softmax=False)
    # 16 features, 6 per step: 0, 6, 12, 16 removed (largest first)
    assert res.fractions.tolist() == [0.0, 6 / 16, 12 / 16, 1.0]
    assert res.curve.tolist() == [[120.0, 120.0 - 75.0, 120.0 - 75.0 - 39.0, 0.0]]
    # patches of 2: sums 10, 18, 42, 50 -> removed 50, 42, 18, 10
    res = deletion_auc(m, x, x, target=0, patch_size=2, apply_softmax=False)
    assert res.curve.tolist() == [[120.0, 70.0, 28.0, 10.0, 0.0]]


def test_blur_baseline_and_softmax_probability():
    x = torch.randn(2, 3, 16, 16)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 4))
    res = insertion_auc(model, x, torch.randn(2, 16, 16), target=[1, 2], n_steps=8)
    p = torch.softmax(model(x), 1)
    # last insertion point is the full input
    assert torch.allclose(res.curve[:, -1], p[[0, 1], [1, 2]], atol=1e-6)
    assert ((res.curve >= 0) & (res.curve <= 1)).all()


def test_region_oracle_beats_random_on_deletion_and_insertion():
    torch.manual_seed(1)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:10, 6:12] = 1
    model = RegionModel(mask, scale=0.05)
    x = torch.rand(8, 3, 16, 16) + 0.5
    oracle = mask.expand(8, 1, 16, 16)
    rand = torch.rand(8, 1, 16, 16)
    kw = dict(target=0, n_steps=16)
    assert (
        deletion_auc(model, x, oracle, **kw).auc
        < deletion_auc(model, x, rand, **kw).auc
    ).all()
    kw["baseline"] = "zero"
    assert (
        insertion_auc(model, x, oracle, **kw).auc
        > insertion_auc(model, x, rand, **kw).auc
    ).all()


def _naive_chefer(model, raw, vis, target, negative, steps, mean=0.5, std=0.5):
    """Independent re-implementation of the protocol: un-normalised images, top-k by
    torch.topk, all channels zeroed, normalised after, top-1 vs target."""
    B, C, H, W = raw.shape
    vis = -vis if negative else vis
    vis = vis.reshape(B, -1)
    hits = [(model((raw - mean) / std).argmax(1) == target).float()]
    for s in steps:
        _, idx = torch.topk(vis, int(H * W * s), dim=-1)
        d = raw.clone().reshape(B, C, -1)
        d.scatter_(-1, idx[:, None, :].expand(B, C, idx.shape[1]), 0.0)
        out = model((d.reshape(B, C, H, W) - mean) / std)
        hits.append((out.argmax(1) == target).float())
    return torch.stack(hits, 1)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_perturbation_test_reproduces_chefer_protocol(mode):
    torch.manual_seed(2)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 16 * 16, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 4),
    )
    raw = torch.rand(12, 3, 16, 16)
    x = (raw - 0.5) / 0.5
    grid = torch.rand(12, 4, 4)  # token grid, upsampled bilinearly
    vis = F.interpolate(grid[:, None], scale_factor=4, mode="bilinear")[:, 0]
    target = torch.randint(0, 4, (12,))
    steps = [0.1 * i for i in range(1, 10)]
    ref = _naive_chefer(model, raw, vis, target, mode == "negative", steps)
    res = perturbation_test(
        model, x, grid, target=target, mode=mode, mean=[0.5] * 3, std=[0.5] * 3
    )
    assert torch.equal(res.curve, ref)
    x_axis = [0.0] + steps
    expected = np.trapezoid(ref.numpy(), x_axis, axis=1)
    np.testing.assert_allclose(res.auc.numpy(), expected, rtol=1e-5)
    assert res.fractions.tolist() == pytest.approx(x_axis)
    # predicted class: the 0% point is 1 by definition
    pred = perturbation_test(model, x, grid, mode=mode, mean=[0.5] * 3, std=[0.5] * 3)
    assert (pred.curve[:, 0] == 1).all()
    # chunking does not change anything
    one = perturbation_test(
        model,
        x,
        grid,
        target=target,
        mode=mode,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        internal_batch_size=5,
    )
    assert torch.equal(one.curve, res.curve)


def test_perturbation_test_token_level_by_hand():
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 2:, 2:] = 1  # the model looks at token 3 only

    def model(x):
        s = (x * mask).sum(dim=(1, 2, 3))
        return torch.stack([s, torch.ones_like(s)], dim=1)

    x = torch.ones(1, 1, 4, 4)
    grid = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])  # token 3 least relevant
    kw = dict(target=0, steps=(0.25, 0.5, 0.75), token_level=True, baseline="zero")
    pos = perturbation_test(model, x, grid, mode="positive", **kw)
    neg = perturbation_test(model, x, grid, mode="negative", **kw)
    assert pos.curve.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    assert neg.curve.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert pos.auc.item() == pytest.approx(0.75)
    assert neg.auc.item() == pytest.approx(0.125)
    # the same with a pixel map and an explicit patch size
    pix = grid.repeat_interleave(2, 1).repeat_interleave(2, 2)
    neg2 = perturbation_test(model, x, pix, mode="negative", patch_size=2, **kw)
    assert torch.equal(neg2.curve, neg.curve)


def test_perturbation_test_additional_forward_args():
    def model(x, scale):
        return x.flatten(1)[:, :3] * scale[:, None]

    x = torch.randn(4, 1, 4, 4)
    scale = torch.tensor([1.0, -1.0, 2.0, 0.5])
    res = perturbation_test(
        model,
        x,
        torch.rand(4, 4, 4),
        additional_forward_args=(scale,),
        internal_batch_size=3,
    )
    assert res.curve.shape == (4, 10)


def test_faithfulness_correlation_exact_for_linear_model():
    torch.manual_seed(3)
    w = torch.randn(3, 1, 8, 8)
    model = SumModel(w)
    x = torch.randn(4, 1, 8, 8)
    target = torch.tensor([0, 1, 2, 0])
    exact = x * w[target]
    fc = faithfulness_correlation(
        model, x, exact, target=target, n_runs=20, subset_size=10, seed=0
    )
    assert torch.allclose(fc, torch.ones(4), atol=1e-5)
    rnd = faithfulness_correlation(
        model, x, torch.randn(4, 8, 8), target=target, n_runs=20, subset_size=10, seed=0
    )
    assert (rnd < fc - 0.2).all()
    tok = faithfulness_correlation(
        model, x, exact, target=target, n_runs=10, subset_size=3, patch_size=2, seed=1
    )
    assert torch.allclose(tok, torch.ones(4), atol=1e-5)


def test_faithfulness_correlation_seeded_and_batch_independent():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    x, a = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    kw = dict(target=1, n_runs=8, subset_size=5, seed=7)
    full = faithfulness_correlation(model, x, a, **kw)
    assert torch.equal(full, faithfulness_correlation(model, x, a, **kw))
    alone = faithfulness_correlation(model, x[1:2], a[1:2], **kw)
    assert_close_to_scale(full[1:2], alone, 1e-4)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(
        full,
        faithfulness_correlation(
            model, x, a, target=1, n_runs=8, subset_size=5, generator=g
        ),
    )


def test_sensitivity_n_by_hand_with_explicit_subsets():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])

    def model(z):
        s = z.flatten(1).sum(1)
        return torch.stack([s**2, -s], dim=1)

    a = torch.tensor([[[0.5, 1.0], [0.0, 2.0]]])
    subs = torch.tensor([[0, 1], [1, 2], [2, 3]])  # shared by the batch
    got = sensitivity_n(model, x, a, n=2, target=0, subsets=[subs])
    # f(x) = 10**2 = 100; removing the values {1,2} -> 7**2, {2,3} -> 5**2,
    # {3,4} -> 3**2
    deltas = np.array([51.0, 75.0, 91.0])
    sums = np.array([1.5, 1.0, 2.0])
    assert got.item() == pytest.approx(np.corrcoef(sums, deltas)[0, 1], rel=1e-5)


def test_sensitivity_n_linear_model_is_one_for_every_n():
    torch.manual_seed(4)
    w = torch.randn(2, 3, 4, 4)
    model = SumModel(w)
    x = torch.randn(2, 3, 4, 4)
    res = sensitivity_n(model, x, x * w[0], n=[1, 4, 8], target=0, n_subsets=12, seed=0)
    assert res.shape == (2, 3)
    assert torch.allclose(res, torch.ones(2, 3), atol=1e-5)


def test_faithfulness_errors_are_value_errors():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    x = torch.randn(2, 1, 4, 4)
    a = torch.randn(2, 4, 4)
    with pytest.raises(ValueError, match="mode"):
        perturbation_test(model, x, a, mode="postive")
    with pytest.raises(ValueError, match="batch size"):
        perturbation_test(model, x, a[:1])
    with pytest.raises(ValueError, match="steps"):
        perturbation_test(model, x, a, steps=(0.0, 0.5))
    with pytest.raises(ValueError, match="token_level"):
        perturbation_test(model, x, a, patch_size=2)
    with pytest.raises(ValueError, match="patch_size"):
        perturbation_test(model, x, a, token_level=True)
    with pytest.raises(ValueError, match="mean"):
        perturbation_test(model, x, a, mean=[0.1, 0.2], std=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        deletion_auc(model, x[0], a)
    with pytest.raises(ValueError, match="n_steps"):
        deletion_auc(model, x, a, n_steps=0)
    with pytest.raises(ValueError, match="spatial size"):
        insertion_auc(model, x, torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="subset_size"):
        faithfulness_correlation(model, x, a, subset_size=17)
    with pytest.raises(ValueError, match="indices"):
        faithfulness_correlation(model, x, a, subsets=torch.tensor([[0, 16], [1, 2]]))
    with pytest.raises(ValueError, match="seed"):
        faithfulness_correlation(
            model, x, a, seed=0, generator=torch.Generator().manual_seed(0)
        )
    with pytest.raises(ValueError, match="each n "):
        sensitivity_n(model, x, a, n=[0, 2])
    with pytest.raises(ValueError, match="forward_func"):
        deletion_auc(lambda z: z, x, a)


def test_progress_bar_and_predicted_target(capsys):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, a = torch.randn(3, 1, 4, 4), torch.randn(3, 4, 4)
    pred = model(x).argmax(1)
    quiet = deletion_auc(model, x, a, n_steps=4, apply_softmax=False)
    loud = deletion_auc(
        model,
        x,
        a,
        n_steps=4,
        apply_softmax=False,
        show_progress=True,
        internal_batch_size=2,
    )
    assert "deletion" in capsys.readouterr().err
    assert_close_to_scale(quiet.curve, loud.curve, 1e-5)
    explicit = deletion_auc(model, x, a, target=pred, n_steps=4, apply_softmax=False)
    assert torch.equal(quiet.curve, explicit.curve)
    first = model(x).gather(1, pred[:, None])[:, 0]
    assert_close_to_scale(quiet.curve[:, 0], first, 1e-5)
