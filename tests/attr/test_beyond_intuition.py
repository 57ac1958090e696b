"""BeyondIntuition against a naive re-implementation of its formulas."""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from tests import naive
from tests.attr.test_tam import integrated_last_gradient
from tests.models import images, timm_vit
from tests.tolerance import assert_close_to_scale

TARGET = torch.tensor([1, 4, 0])


@pytest.fixture(scope="module")
def model():
    return timm_vit()


@pytest.fixture(scope="module")
def x():
    return images(3)


def block_inputs_and_values(model, x):
    """Block inputs z and values V (heads concatenated) from plain module hooks."""
    zs, vs, handles = {}, {}, []
    D = model.embed_dim
    for i, blk in enumerate(model.blocks):
        handles.append(
            blk.register_forward_pre_hook(lambda m, a, i=i: zs.__setitem__(i, a[0]))
        )
        handles.append(
            blk.attn.qkv.register_forward_hook(
                lambda m, a, out, i=i: vs.__setitem__(i, out[..., 2 * D :])
            )
        )
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return zs, vs


def naive_bi(model, x, target, mode, start_layer, steps):
    A, G = naive.attention_and_grads(model, x, target)
    zs, vs = block_inputs_and_values(model, x)
    L, (B, H, N, _) = len(A), A[0].shape
    out = []
    ig = integrated_last_gradient(model, x, target, steps)
    for b in range(B):
        P = torch.eye(N)
        for layer in range(start_layer, L):
            if mode == "head":
                imp = torch.stack(
                    [(A[layer][b, h].T @ G[layer][b, h]).abs().mean() for h in range(H)]
                )
                imp = imp / imp.sum()
                mix = sum(imp[h] * A[layer][b, h] for h in range(H))
            else:
                W = model.blocks[layer].attn.proj.weight.detach()
                ratio = torch.stack(
                    [
                        (vs[layer][b, j] @ W.T).norm() / zs[layer][b, j].norm()
                        for j in range(N)
                    ]
                )
                mix = A[layer][b].mean(0) @ torch.diag(ratio)
            P = P + mix @ P
        feedback = ig[b].clamp(min=0).mean(0)
        out.append((feedback * P)[0])
    return torch.stack(out)[:, 1:].reshape(-1, 4, 4)


@pytest.mark.parametrize(
    "mode,start_layer,steps", [("token", 0, 3), ("head", 0, 3), ("head", 1, 2)]
)
def test_matches_naive(model, x, mode, start_layer, steps):
    expected = naive_bi(model, x, TARGET, mode, start_layer, steps)
    method = cv.BeyondIntuition(model, mode=mode, start_layer=start_layer, steps=steps)
    got = method.attribute(x, target=TARGET, output="tokens")
    assert_close_to_scale(got, expected, 1e-4)


def test_token_mode_start_layer_one(model, x):
    expected = naive_bi(model, x, TARGET, "token", 1, 2)
    method = cv.BeyondIntuition(model, start_layer=1, steps=2)
    got = method.attribute(x, target=TARGET, output="tokens")
    assert_close_to_scale(got, expected, 1e-4)


def test_defaults(model):
    method = cv.BeyondIntuition(model)
    assert (method.mode, method.start_layer, method.steps) == ("token", 0, 20)
    assert cv.BeyondIntuition(timm_vit(depth=12), mode="head").start_layer == 3


def test_no_grad_context_and_frozen_model(model, x):
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            got = cv.BeyondIntuition(model, mode="head", steps=2).attribute(
                x, target=TARGET, output="tokens"
            )
        assert torch.isfinite(got).all() and got.abs().sum() > 0
        assert not any(p.requires_grad for p in model.parameters())
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


def test_bad_options(model, x):
    with pytest.raises(ValueError, match="mode"):
        cv.BeyondIntuition(model, mode="tokens")
    with pytest.raises(ValueError, match="steps"):
        cv.BeyondIntuition(model, steps=0)
    with pytest.raises(ValueError, match="layer"):
        cv.BeyondIntuition(model, start_layer=-3)
    with pytest.raises(ValueError, match="B, C, H, W"):
        cv.BeyondIntuition(model).attribute(x[0])
