"""The metrics take the same target forms as the methods (one normaliser,
``captum_vit._targets``) and reject the others with the same errors."""

from __future__ import annotations

import pytest
import torch

from captum_vit.metrics import deletion_auc, faithfulness_correlation, perturbation_test
from tests.target_forms import ACCEPTED, REJECTED

CLASSES = 5  # the out-of-range cases of REJECTED


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, CLASSES))


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def attr():
    return torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize(
    "target,classes", [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_accepted_target_forms(model, x, attr, target, classes):
    ref = torch.tensor(classes)
    got = deletion_auc(model, x, attr, target, n_steps=4)
    assert torch.equal(got.curve, deletion_auc(model, x, attr, ref, n_steps=4).curve)
    # the curve's first point is the score of the named class
    expected = torch.softmax(model(x), 1).gather(1, ref[:, None])[:, 0]
    torch.testing.assert_close(got.curve[:, 0], expected.detach())
    pos = perturbation_test(model, x, attr, target)
    assert torch.equal(pos.curve, perturbation_test(model, x, attr, ref).curve)


@pytest.mark.parametrize(
    "target,error,match", [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_rejected_target_forms(model, x, attr, target, error, match):
    with pytest.raises(error, match=match):
        deletion_auc(model, x, attr, target, n_steps=4)
    with pytest.raises(error, match=match):
        perturbation_test(model, x, attr, target)
    with pytest.raises(error, match=match):
        faithfulness_correlation(model, x, attr, target, n_runs=4, seed=0)
