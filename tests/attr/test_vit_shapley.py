"""ViTShapley: the surrogate, the explainer, and that it learns Shapley values.

A tiny timm ViT (32x32 inputs, 8x8 patches: 16 patch tokens) is trained on a
synthetic task (the class is the quadrant that holds a bright blob), then the
surrogate and the explainer are trained, and the explainer's values are
compared with the EXACT Shapley values of the surrogate (all 2^16 subsets
enumerated) and with Captum's KernelShap on the same game.
"""

from __future__ import annotations

import copy
import time
from math import factorial

import pytest
import torch
from captum._utils.models.linear_model import LinearModel
from captum.attr import KernelShap
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader, TensorDataset

import captum_vit as cv
from captum_vit.attr.vit_shapley import (
    ShapleyExplainer,
    ShapleySurrogate,
    sample_shapley_subsets,
    sample_uniform_subsets,
)
from tests.attr.test_contract import assert_same_state, snapshot
from tests.models import (
    hf_dinov2_from_timm,
    hf_vit_from_timm,
    images,
    timm_dinov2,
    timm_vit,
    torchvision_vit_from_timm,
)
from tests.tolerance import assert_close_to_scale

NUM_PLAYERS = 16
REPORT = {}


# ---------------------------------------------------------------- the task
def blobs(n: int, seed: int):
    """Noise images with one bright Gaussian blob; label = its quadrant."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    c = torch.randint(3, 13, (n, 2), generator=g).float()
    cy, cx = c[:, 0] + 16 * (y // 2), c[:, 1] + 16 * (y % 2)
    r = torch.arange(32.0)
    d = (r[None, :, None] - cy[:, None, None]) ** 2 + (
        r[None, None, :] - cx[:, None, None]
    ) ** 2
    return x + 2.0 * torch.exp(-d / 8.0)[:, None], y


def make_vit() -> VisionTransformer:
    return VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=4,
        mlp_ratio=2,
    )


def loader(x, batch_size=64, shuffle=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(x), batch_size=batch_size, shuffle=shuffle, generator=g
    )


@pytest.fixture(scope="module")
def task():
    t0 = time.perf_counter()
    torch.manual_seed(0)
    x, y = blobs(4096, 0)
    model = make_vit()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(3):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xt, yt = blobs(256, 1)
    with torch.no_grad():
        acc = (model(xt).argmax(-1) == yt).float().mean().item()
    REPORT["classifier_s"] = time.perf_counter() - t0
    REPORT["classifier_acc"] = acc
    return model, x, xt, yt


@pytest.fixture(scope="module")
def trained(task):
    model, x, xt, yt = task
    before = snapshot(model)
    t0 = time.perf_counter()
    surrogate = cv.ViTShapley.train_surrogate(
        model,
        loader(x),
        epochs=1,
        lr=1e-3,
        masks_per_image=2,
        seed=0,
        show_progress=False,
    )
    REPORT["surrogate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    explainer = cv.ViTShapley.train_explainer(
        surrogate,
        loader(x[:2048]),
        epochs=2,
        lr=1e-3,
        num_subsets=32,
        seed=0,
        show_progress=False,
    )
    REPORT["explainer_s"] = time.perf_counter() - t0
    # the user's classifier is deep-copied and never modified
    assert_same_state(before, snapshot(model))
    return cv.ViTShapley(explainer, surrogate)


# ------------------------------------------------------------- exact values
_IDX = torch.arange(2**NUM_PLAYERS)
_MASKS = ((_IDX[:, None] >> torch.arange(NUM_PLAYERS)) & 1).float()
_SIZE = _MASKS.sum(1).long()
_WEIGHT = torch.tensor(
    [
        factorial(s) * factorial(NUM_PLAYERS - s - 1) / factorial(NUM_PLAYERS)
        for s in range(NUM_PLAYERS)
    ],
    dtype=torch.float64,
)


def shapley_from_lattice(v: torch.Tensor) -> torch.Tensor:
    r"""Exact Shapley values from the values of all subsets.

    ``v[k]`` is the game's value (any trailing shape) on the subset whose
    members are the set bits of ``k``;
    :math:`\phi_i = \sum_{S \not\ni i} \frac{|S|!(d-|S|-1)!}{d!}
    (v(S \cup i) - v(S))`, vectorised over all subsets per player.
    """
    v = v.double()
    phi = []
    for i in range(NUM_PLAYERS):
        without = _IDX[(_IDX >> i) & 1 == 0]
        w = _WEIGHT[_SIZE[without]].reshape(-1, *([1] * (v.dim() - 1)))
        phi.append((w * (v[without | (1 << i)] - v[without])).sum(0))
    return torch.stack(phi)


def exact_shapley(surrogate, image, chunk=8192):
    """All 2^16 subsets of one image through the surrogate (softmax game)."""
    with torch.no_grad():
        v = torch.cat(
            [
                surrogate(image.expand(len(m), -1, -1, -1), m).softmax(-1)
                for m in _MASKS.split(chunk)
            ]
        )
    return shapley_from_lattice(v), v


def _wls(model, dataloader, construct_kwargs, **kwargs):
    # closed-form weighted least squares for KernelShap (no sklearn needed)
    xs, ys, ws = zip(*dataloader)
    x, w = torch.cat(xs).double(), torch.cat(ws).double().reshape(-1, 1)
    y = torch.cat(ys).double().reshape(len(x), -1)
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    sol = torch.linalg.lstsq(a * w.sqrt(), y * w.sqrt()).solution
    model._construct_model_params(
        norm_type=None,
        weight_values=sol[:-1].T.float(),
        bias_value=sol[-1].float(),
        classes=None,
    )
    return {}


def kernel_shap(surrogate, image, target, n_samples):
    """Captum's KernelShap on the same game: the features are the 16 patch
    players (a patch feature mask over the surrogate's token mask)."""

    def game(mask):
        return surrogate(image.expand(len(mask), -1, -1, -1), mask).softmax(-1)

    ks = KernelShap(game)
    ks.interpretable_model = LinearModel(train_fn=_wls)
    torch.manual_seed(0)
    return ks.attribute(
        torch.ones(1, NUM_PLAYERS),
        baselines=torch.zeros(1, NUM_PLAYERS),
        target=int(target),
        feature_mask=torch.arange(NUM_PLAYERS)[None],
        n_samples=n_samples,
        perturbations_per_eval=n_samples,
    )[0]


def pearson(a, b):
    return torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1].item()


def test_lattice_formula_on_known_games():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(NUM_PLAYERS, generator=g, dtype=torch.float64)
    # additive game: phi = w
    torch.testing.assert_close(shapley_from_lattice(_MASKS.double() @ w), w)
    # unanimity game of {0, 3, 5}: 1/3 each
    u = (_MASKS[:, [0, 3, 5]].sum(1) == 3).double()
    expected = torch.zeros(NUM_PLAYERS, dtype=torch.float64)
    expected[[0, 3, 5]] = 1 / 3
    torch.testing.assert_close(shapley_from_lattice(u), expected)


# ------------------------------------------------------ it learns Shapley
def test_learns_exact_shapley_values(task, trained, capsys):
    model, _, xt, _ = task
    method = trained
    assert REPORT["classifier_acc"] > 0.9  # the classifier learned the task
    with torch.no_grad():  # the surrogate still predicts like the classifier
        agree = method.surrogate(xt).argmax(-1) == model(xt).argmax(-1)
    REPORT["surrogate_agreement"] = agree.float().mean().item()
    assert REPORT["surrogate_agreement"] > 0.8
    x = xt[:4]
    with torch.no_grad():
        phi, grand = method.shapley_values(x, return_grand=True)
    target = grand.argmax(-1)
    attr = method.attribute(x, output="tokens").reshape(4, NUM_PLAYERS)
    torch.testing.assert_close(
        attr, phi.gather(2, target[:, None, None].expand(-1, 16, 1))[..., 0]
    )
    t0 = time.perf_counter()
    ours, ks, effs = [], [], []
    for b in range(len(x)):
        exact, v = exact_shapley(method.surrogate, x[b : b + 1])
        # efficiency of the exact values (sanity of the lattice formula)
        torch.testing.assert_close(exact.sum(0), (v[-1] - v[0]).double())
        # efficiency of the explainer: sum = v(all) - v(none), every class
        effs.append((phi[b].sum(0) - (v[-1] - v[0]).float()).abs().max().item())
        t = target[b]
        ours.append(pearson(phi[b, :, t], exact[:, t]))
        ks.append(
            pearson(kernel_shap(method.surrogate, x[b : b + 1], t, 256), exact[:, t])
        )
    REPORT["exact_s"] = time.perf_counter() - t0
    REPORT["pearson_explainer"] = sum(ours) / len(ours)
    REPORT["pearson_kernelshap_256"] = sum(ks) / len(ks)
    REPORT["efficiency_err"] = max(effs)
    with capsys.disabled():
        print("\nViTShapley report:", {k: f"{v:.4g}" for k, v in REPORT.items()})
    assert max(effs) < 1e-4
    assert REPORT["pearson_explainer"] >= 0.9, (ours, REPORT)


# -------------------------------------------------------------- surrogate
def test_surrogate_holds_out_masked_patches():
    model = timm_vit()
    surrogate = ShapleySurrogate(copy.deepcopy(model))
    x = images(3)
    with torch.no_grad():
        # all kept: the model's own function
        torch.testing.assert_close(surrogate(x), model(x), rtol=1e-4, atol=1e-5)
        mask = torch.ones(3, 16)
        mask[:, [0, 5, 10]] = 0
        changed = x.clone()
        changed[:, :, 0:8, 0:8] = 5.0  # patch 0
        changed[:, :, 8:16, 8:16] = -3.0  # patch 5
        torch.testing.assert_close(surrogate(changed, mask), surrogate(x, mask))
        assert not torch.allclose(surrogate(changed), surrogate(x))
        # nothing kept: independent of the image
        none = surrogate(torch.cat([x, -x]), torch.zeros(6, 16))
        torch.testing.assert_close(none, none[:1].expand(6, -1))


@pytest.mark.parametrize("family", ["hf_eager", "torchvision", "avg_pool", "dinov2"])
def test_surrogate_families(family):
    base = timm_vit()
    x = images(2)
    mask = (torch.rand(2, 16, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    if family in ("avg_pool", "dinov2"):
        # a held-out patch enters neither the attention nor the patch mean
        # (DINOv2's head reads the class token and the mean of the patches)
        if family == "avg_pool":
            model = timm_vit(global_pool="avg", class_token=False)
        else:
            model = hf_dinov2_from_timm(timm_dinov2(), mean_head=True)
        s = ShapleySurrogate(model)
        changed = x.clone()
        dropped = int((mask[0] == 0).nonzero()[0])
        r, c = divmod(dropped, 4)
        changed[0, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] += 4.0
        with torch.no_grad():
            torch.testing.assert_close(s(changed, mask), s(x, mask))
            logits = model(x)
            logits = getattr(logits, "logits", logits)  # Hugging Face output
            torch.testing.assert_close(s(x), logits, rtol=1e-4, atol=1e-5)
            assert torch.isfinite(s(x, torch.zeros(2, 16))).all()
        return
    other = {
        "hf_eager": lambda: hf_vit_from_timm(base, "eager"),
        "torchvision": lambda: torchvision_vit_from_timm(base),
    }[family]()
    with torch.no_grad():
        torch.testing.assert_close(
            ShapleySurrogate(other)(x, mask),
            ShapleySurrogate(base)(x, mask),
            rtol=1e-4,
            atol=1e-5,
        )


def test_subset_samplers():
    g = torch.Generator().manual_seed(0)
    u = sample_uniform_subsets(20000, 16, g)
    counts = torch.bincount(u.sum(1).long(), minlength=17).float() / 20000
    assert (counts - 1 / 17).abs().max() < 0.01  # uniform subset size
    assert (u.mean(0) - 0.5).abs().max() < 0.02  # then a uniform subset
    s = sample_shapley_subsets(40000, 16, paired=True, generator=g)
    torch.testing.assert_close(s[0::2] + s[1::2], torch.ones(20000, 16))
    sizes = s[0::2].sum(1).long()
    assert sizes.min() >= 1 and sizes.max() <= 15
    k = torch.arange(1, 16, dtype=torch.float64)
    p = 1 / (k * (16 - k))
    p = p / p.sum()
    freq = torch.bincount(sizes, minlength=16)[1:].double() / 20000
    assert (freq - p).abs().max() < 0.01


# ---------------------------------------------------------- the contract
def test_attribute_contract(trained, task):
    method = trained
    _, _, xt, _ = task
    x = xt[:3]
    attr = method.attribute(x, target=[0, 1, 2])
    assert attr.shape == x.shape and not attr.requires_grad
    grid = method.attribute(x, target=[0, 1, 2], output="tokens")
    assert grid.shape == (3, 4, 4)
    for i in range(3):  # batch independence
        single = method.attribute(x[i : i + 1], target=i, output="tokens")
        assert_close_to_scale(single, grid[i : i + 1], 1e-4)
    assert method.has_convergence_delta() is False
    assert method.get_name() == "ViT Shapley"


def test_save_load_roundtrip(trained, task, tmp_path):
    _, _, xt, _ = task
    path = tmp_path / "vit_shapley.pt"
    trained.save(str(path))
    loaded = cv.ViTShapley.load(str(path), make_vit)
    torch.testing.assert_close(
        loaded.attribute(xt[:4], output="tokens"),
        trained.attribute(xt[:4], output="tokens"),
    )
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a file written by"):
        cv.ViTShapley.load(str(tmp_path / "other.pt"), make_vit)


def test_seeded_and_short_runs():
    model = timm_vit()
    x = images(16)

    def run():
        s = cv.ViTShapley.train_surrogate(
            model,
            loader(x, 8, shuffle=False),
            max_steps=2,
            seed=3,
            show_progress=False,
        )
        e = cv.ViTShapley.train_explainer(
            s,
            loader(x, 8, shuffle=False),
            max_steps=2,
            num_subsets=4,
            seed=3,
            show_progress=False,
        )
        return s, e

    (s1, e1), (s2, e2) = run(), run()
    for a, b in ((s1, s2), (e1, e2)):
        for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), n
    assert not s1.training and not e1.training
    # the surrogate's flags and mode are restored after the explainer
    assert all(p.requires_grad for p in s1.parameters())
    # other batch formats, and an explainer initialised from another model
    other = timm_vit(seed=1)
    before = snapshot(other)
    e3 = cv.ViTShapley.train_explainer(
        s1,
        [{"image": x[:8]}, (x[8:], torch.zeros(8))],
        num_subsets=2,
        model=other,
        show_progress=False,
    )
    assert e3.backbone is not other
    assert_same_state(before, snapshot(other))


# ------------------------------------------------------------ user state
class Boom(RuntimeError):
    pass


def test_user_model_untouched_after_exception():
    model = timm_vit()
    model.blocks[0].train()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.ones_like(params[-1])
    x = images(8)

    def failing():
        yield x[:4]
        raise Boom("the dataloader broke")

    before = snapshot(model)
    with pytest.raises(Boom):
        cv.ViTShapley.train_surrogate(model, failing(), show_progress=False)
    assert_same_state(before, snapshot(model))
    s = cv.ViTShapley.train_surrogate(model, [x], max_steps=1, show_progress=False)
    assert_same_state(before, snapshot(model))
    s_before = snapshot(s)
    with pytest.raises(Boom):
        cv.ViTShapley.train_explainer(s, failing(), num_subsets=2, show_progress=False)
    assert_same_state(s_before, snapshot(s))


def test_surrogate_restored_when_its_forward_raises():
    """The explainer trains with the surrogate frozen (eval, no gradients);
    its modes, flags, grads and weights come back as they were, after a
    successful run and after an exception raised inside its forward."""
    s = ShapleySurrogate(timm_vit())
    s.train()
    s.model.blocks[1].eval()
    params = list(s.parameters())
    params[1].requires_grad_(False)
    params[-1].grad = torch.ones_like(params[-1])
    seen, fail = [], []

    def probe(module, args):
        seen.append((s.training, any(p.requires_grad for p in s.parameters())))
        if fail:
            raise Boom("raised inside the surrogate's forward")

    handle = s.model.blocks[0].register_forward_pre_hook(probe)
    try:
        before = snapshot(s)
        x = images(4)
        cv.ViTShapley.train_explainer(s, [x], num_subsets=2, show_progress=False)
        assert_same_state(before, snapshot(s))
        assert seen and all(state == (False, False) for state in seen)
        fail.append(True)
        with pytest.raises(Boom):
            cv.ViTShapley.train_explainer(s, [x], num_subsets=2, show_progress=False)
        assert_same_state(before, snapshot(s))
    finally:
        handle.remove()


def test_training_trains_copies_only():
    """Nothing trained shares a parameter with the user's models, and the
    caller's global random state is left as it was."""
    model, other, x = timm_vit(), timm_vit(seed=1), images(8)
    rng = torch.get_rng_state()
    s = cv.ViTShapley.train_surrogate(model, [x], show_progress=False)
    e1 = cv.ViTShapley.train_explainer(s, [x], num_subsets=2, show_progress=False)
    e2 = cv.ViTShapley.train_explainer(
        s, [x], num_subsets=2, model=other, show_progress=False
    )
    assert torch.equal(torch.get_rng_state(), rng)

    def storages(module):
        return {p.untyped_storage().data_ptr() for p in module.parameters()}

    assert storages(s).isdisjoint(storages(model))
    for e in (e1, e2):
        assert storages(e).isdisjoint(storages(s) | storages(model) | storages(other))
    # the copies were trained (one Adam step), the sources were not
    for trained, source in ((s.model, model), (e1.backbone, s.model)):
        w = trained.blocks[0].attn.qkv.weight
        assert not torch.equal(w, source.blocks[0].attn.qkv.weight)


# -------------------------------------------------------------- bad input
def test_bad_input(trained, task):
    method = trained
    _, _, xt, _ = task
    x = xt[:2]
    model = make_vit()
    s = method.surrogate
    with pytest.raises(ValueError, match="B, C, H, W"):
        method.attribute(x[0])
    with pytest.raises(ValueError, match="NaN or Inf"):
        bad = x.clone()
        bad[0, 0, 0, 0] = float("nan")
        method.attribute(bad)
    with pytest.raises(ValueError, match="out of range"):
        method.attribute(x, target=4)
    with pytest.raises(ValueError, match="takes 32x32 images"):
        method.attribute(images(2, size=48))
    with pytest.raises(ValueError, match="output must be one of"):
        method.attribute(x, output="pixels")
    with pytest.raises(ValueError, match="additional_forward_args"):
        method.attribute(x, additional_forward_args=(1,))
    with pytest.raises(ValueError, match="mask must have shape"):
        s(x, torch.ones(2, 15))
    with pytest.raises(ValueError, match="epochs"):
        cv.ViTShapley.train_surrogate(model, [x], epochs=0)
    with pytest.raises(ValueError, match="lr"):
        cv.ViTShapley.train_surrogate(model, [x], lr=-1.0)
    with pytest.raises(ValueError, match="max_steps"):
        cv.ViTShapley.train_surrogate(model, [x], max_steps=0)
    with pytest.raises(ValueError, match="masks_per_image"):
        cv.ViTShapley.train_surrogate(model, [x], masks_per_image=0)
    with pytest.raises(ValueError, match="dataloader batch"):
        cv.ViTShapley.train_surrogate(model, ["not images"], show_progress=False)
    with pytest.raises(ValueError, match="num_subsets"):
        cv.ViTShapley.train_explainer(s, [x], num_subsets=3)
    with pytest.raises(ValueError, match="link"):
        cv.ViTShapley.train_explainer(s, [x], link="sigmoid")
    with pytest.raises(TypeError, match="ShapleySurrogate"):
        cv.ViTShapley.train_explainer(model, [x])
    with pytest.raises(TypeError, match="ShapleyExplainer"):
        cv.ViTShapley(model, s)
    with pytest.raises(ValueError, match="link"):
        cv.ViTShapley(method.explainer, s, link="probit")
    with pytest.raises(cv.adapters.UnsupportedModelError):
        cv.ViTShapley.train_surrogate(torch.nn.Linear(3, 3), [x])
    with pytest.raises(ValueError, match="even number"):
        sample_shapley_subsets(3, 16)
    assert isinstance(method.explainer, ShapleyExplainer)
