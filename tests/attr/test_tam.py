"""TAM against a naive re-implementation of its formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import captum_vit as cv
from tests import naive
from tests.models import images, timm_vit
from tests.tolerance import assert_close_to_scale

TARGET = torch.tensor([2, 0, 4])


@pytest.fixture(scope="module")
def model():
    return timm_vit()


@pytest.fixture(scope="module")
def x():
    return images(3)


def integrated_last_gradient(model, x, target, steps):
    """mean_k d logit_t(alpha_k x) / d A^(L-1), one image at a time."""
    out = []
    for i in range(x.shape[0]):
        total = 0
        for alpha in np.linspace(0, 1, steps):
            logits, attns = naive.forward(model, x[i : i + 1] * float(alpha))
            (g,) = torch.autograd.grad(logits[0, int(target[i])], attns[-1])
            total = total + g
        out.append(total / steps)
    return torch.cat(out)


def naive_tam(model, x, target, start_layer, steps, row=None):
    """The authors' ``transition_attention_maps`` written with plain loops."""
    with torch.no_grad():
        _, attns = naive.forward(model, x)
    fused = [a.mean(1) for a in attns]
    L, N = len(fused), fused[0].shape[-1]
    row = torch.eye(N)[0] if row is None else row
    result = []
    grad = integrated_last_gradient(model, x, target, steps)
    for b in range(x.shape[0]):
        state = row @ fused[-1][b]
        for layer in reversed(range(start_layer, L - 1)):
            state = state @ fused[layer][b] + state
        weight = row @ grad[b].clamp(min=0).mean(0)
        result.append(state * weight)
    npre = model.num_prefix_tokens
    return torch.stack(result)[:, npre:].reshape(-1, 4, 4)


@pytest.mark.parametrize("start_layer,steps", [(0, 4), (1, 3), (0, 1)])
def test_matches_naive(model, x, start_layer, steps):
    expected = naive_tam(model, x, TARGET, start_layer, steps)
    got = cv.TAM(model, start_layer=start_layer, steps=steps).attribute(
        x, target=TARGET, output="tokens"
    )
    assert_close_to_scale(got, expected, 1e-4)


def test_default_start_layer_and_steps(model):
    method = cv.TAM(model)
    assert method.start_layer == 0 and method.steps == 20  # 2 blocks // 3
    deep = timm_vit(depth=12)
    assert cv.TAM(deep).start_layer == 4


def test_average_pooled_model(x):
    model = timm_vit(global_pool="avg")
    row = torch.zeros(17)
    row[1:] = 1 / 16
    expected = naive_tam(model, x, TARGET, 0, 3, row=row)
    got = cv.TAM(model, steps=3).attribute(x, target=TARGET, output="tokens")
    assert_close_to_scale(got, expected, 1e-4)


def test_target_changes_map(model, x):
    method = cv.TAM(model, steps=3)
    a = method.attribute(x, target=0, output="tokens")
    b = method.attribute(x, target=1, output="tokens")
    assert not torch.allclose(a, b)


def test_bad_options(model, x):
    with pytest.raises(ValueError, match="steps"):
        cv.TAM(model, steps=0)
    with pytest.raises(ValueError, match="steps"):
        cv.TAM(model, steps=2.5)
    with pytest.raises(ValueError, match="layer"):
        cv.TAM(model, start_layer=2)
    with pytest.raises(ValueError, match="out of range"):
        cv.TAM(model, steps=2).attribute(x, target=5)
