"""``attribute(target=...)`` of the ViT methods takes every Captum target form
(one normaliser, shared with the metrics) and rejects the others clearly."""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from tests.models import CLASSES, images, timm_vit
from tests.target_forms import ACCEPTED, REJECTED

assert CLASSES == 5  # the out-of-range cases of REJECTED


@pytest.fixture(scope="module")
def method():
    return cv.GradSAM(timm_vit())


@pytest.fixture(scope="module")
def x():
    return images(2)


@pytest.mark.parametrize(
    "target,classes", [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_accepted_target_forms(method, x, target, classes):
    got = method.attribute(x, target=target, output="tokens")
    expected = method.attribute(x, target=torch.tensor(classes), output="tokens")
    assert torch.equal(got, expected)


def test_the_target_changes_the_map(method, x):
    a = method.attribute(x, target=0, output="tokens")
    b = method.attribute(x, target=3, output="tokens")
    assert not torch.allclose(a, b)


@pytest.mark.parametrize(
    "target,error,match", [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_rejected_target_forms(method, x, target, error, match):
    with pytest.raises(error, match=match):
        method.attribute(x, target=target)
