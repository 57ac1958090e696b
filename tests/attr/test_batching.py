"""``internal_batch_size`` on every method (Captum's name and meaning): at
most that many images, or perturbed copies of an image, per forward pass,
and the maps of the whole batch — driven by the contract list of
``tests/attr/test_contract.py``, in float64 so that chunked and unchunked
maps agree to rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import captum_vit as cv
from captum_vit._batching import check_internal_batch_size, select_rows
from tests.attr.test_contract import IDS, METHODS
from tests.models import CLASSES, images, timm_vit
from tests.tolerance import assert_close_to_scale

TARGET = torch.tensor([0, 3, 1, 4, 2])
#: two float64 computations of one map in a different batch composition
TOL = 1e-10


@pytest.fixture(scope="module")
def model():
    return timm_vit().double()


@pytest.fixture(scope="module")
def x():
    return images(5).double()


class _HeadRows:
    """Records the batch size of every call of the model's classifier (the
    rows of one forward pass, copies included: ViT-ReciproCAM and TIS make
    their copies inside the model)."""

    def __init__(self, model: torch.nn.Module) -> None:
        head = cv.adapters.get(model).head_parts().classifiers[0]
        self.rows: list = []
        self.handle = head.register_forward_pre_hook(
            lambda _m, a: self.rows.append(int(a[0].shape[0]))
        )

    def __enter__(self) -> _HeadRows:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_chunks_give_the_maps_of_the_whole_batch(name, factory, tol, model, x):
    method = factory(model)
    full = method.attribute(x, target=TARGET, output="tokens")
    full_px = method.attribute(x, target=TARGET)
    for size in (1, 2, 3, 5, 64):
        with _HeadRows(model) as seen:
            got = method.attribute(
                x, target=TARGET, output="tokens", internal_batch_size=size
            )
        assert got.shape == full.shape and got.dtype == full.dtype
        assert_close_to_scale(got, full, TOL)
        # the bound holds for every forward pass, copies included
        assert seen.rows and max(seen.rows) <= size, (size, seen.rows)
    got_px = method.attribute(x, target=TARGET, internal_batch_size=2)
    assert got_px.shape == x.shape
    assert_close_to_scale(got_px, full_px, TOL)
    one = method.attribute((x,), target=TARGET, internal_batch_size=2)
    assert isinstance(one, tuple) and torch.equal(one[0], got_px)


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_every_target_form_is_split_with_the_batch(name, factory, tol, model, x):
    method = factory(model)
    pred = model(x).argmax(-1)
    forms = {
        "none": (None, pred),
        "int": (2, torch.full((5,), 2)),
        "list": ([4, 0, 2, 1, 3], torch.tensor([4, 0, 2, 1, 3])),
        "tensor": (TARGET, TARGET),
        "numpy": (np.array([1, 1, 0, 3, 4]), torch.tensor([1, 1, 0, 3, 4])),
    }
    for target, classes in forms.values():
        got = method.attribute(x, target=target, output="tokens", internal_batch_size=2)
        for i in range(5):  # each sample explained alone for its own class
            alone = method.attribute(
                x[i : i + 1], target=int(classes[i]), output="tokens"
            )
            assert_close_to_scale(got[i : i + 1], alone, TOL)


class _BiasedViT(VisionTransformer):
    """A timm ViT whose forward takes extra arguments: a per-sample logit
    bias ``(B, classes)`` and a shared scale (a float)."""

    def forward(self, x, bias, scale):  # type: ignore[override]
        return super().forward(x) * scale + bias


def _biased_vit() -> _BiasedViT:
    """The tiny test ViT (same weights), its forward taking the arguments."""
    model = timm_vit().double()
    model.__class__ = _BiasedViT  # only forward differs
    return model


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_per_sample_forward_arguments_follow_their_image(name, factory, tol, x):
    model = _biased_vit()
    method = factory(model)
    bias = torch.linspace(-3, 3, 5 * CLASSES, dtype=torch.float64)
    bias = bias.reshape(5, CLASSES).flip(1)
    if isinstance(method, cv.ViTShapley):
        with pytest.raises(ValueError, match="additional_forward_args"):
            method.attribute(x, additional_forward_args=(bias, 0.5))
        return
    full = method.attribute(x, additional_forward_args=(bias, 0.5), output="tokens")
    got = method.attribute(
        x, additional_forward_args=(bias, 0.5), output="tokens", internal_batch_size=2
    )
    assert_close_to_scale(got, full, TOL)
    for i in range(5):  # predicted class and scores with the image's own bias
        alone = method.attribute(
            x[i : i + 1],
            additional_forward_args=(bias[i : i + 1], 0.5),
            output="tokens",
        )
        assert_close_to_scale(got[i : i + 1], alone, TOL)


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_bad_internal_batch_size(name, factory, tol, model, x):
    method = factory(model)
    with _HeadRows(model) as seen:
        for bad in (0, -2):
            with pytest.raises(ValueError, match="internal_batch_size must be a pos"):
                method.attribute(x, internal_batch_size=bad)
        for bad in (2.0, "4", True, torch.tensor(2)):
            with pytest.raises(TypeError, match="internal_batch_size must be a pos"):
                method.attribute(x, internal_batch_size=bad)
    assert seen.rows == []  # refused before any forward pass
    # numpy integers are integers
    got = method.attribute(x, target=TARGET, internal_batch_size=np.int64(2))
    assert_close_to_scale(got, method.attribute(x, target=TARGET), TOL)


@pytest.mark.parametrize("cls", [cv.ATMAN, cv.ViTCX, cv.TIS, cv.ViTReciproCAM])
def test_constructor_default_and_its_checks(cls, model, x):
    """The per-copy methods keep their constructor's ``internal_batch_size``
    as the default of ``attribute``'s; ``attribute``'s wins."""
    opts = {"n_masks": 16} if cls is cv.TIS else {}
    method = cls(model, internal_batch_size=3, **opts)
    with _HeadRows(model) as seen:
        default = method.attribute(x[:2], target=TARGET[:2], output="tokens")
    assert max(seen.rows) == 3
    with _HeadRows(model) as seen:
        wins = method.attribute(
            x[:2], target=TARGET[:2], output="tokens", internal_batch_size=2
        )
    assert max(seen.rows) == 2
    assert_close_to_scale(wins, default, TOL)
    with pytest.raises(ValueError, match="internal_batch_size"):
        cls(model, internal_batch_size=0, **opts)
    with pytest.raises(TypeError, match="internal_batch_size"):
        cls(model, internal_batch_size=2.5, **opts)


def test_helpers():
    assert check_internal_batch_size(None) is None
    assert check_internal_batch_size(None, 7) == 7
    assert check_internal_batch_size(np.int32(3)) == 3
    per_sample = torch.arange(10).reshape(5, 2)
    shared = torch.arange(3)
    args = select_rows((per_sample, shared, "x", 1.5), slice(1, 3), 5)
    assert torch.equal(args[0], per_sample[1:3]) and args[1] is shared
    assert args[2:] == ("x", 1.5)
    rows = select_rows(per_sample, torch.tensor([4, 4, 4]), 5)
    assert torch.equal(rows[0], per_sample[[4, 4, 4]])
    assert select_rows(None, slice(0, 1), 5) == ()
