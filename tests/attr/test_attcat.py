"""AttCAT against a naive re-implementation of the authors' ``generate_TransCAM``
on a stock timm model: hooks on the blocks (hidden states, ``retain_grad``)
and on the unfused attention's dropout (attention probabilities)."""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from tests.models import images, timm_vit


def naive_attcat(model, x, target, query="all"):
    npre = model.num_prefix_tokens
    out = []
    for b in range(x.shape[0]):
        hidden, attn, handles = [], [], []
        for blk in model.blocks:
            blk.attn.fused_attn = False
            handles.append(
                blk.register_forward_pre_hook(
                    lambda m, a, hidden=hidden: hidden.append(a[0])
                )
            )
            handles.append(
                blk.attn.attn_drop.register_forward_hook(
                    lambda m, a, o, attn=attn: attn.append(o.detach())
                )
            )
        try:
            xb = x[b : b + 1].clone().requires_grad_(True)
            logits = model(xb)
            for h in hidden:
                h.retain_grad()
            logits[0, target[b]].backward()
        finally:
            for h in handles:
                h.remove()
            for blk in model.blocks:
                blk.attn.fused_attn = True
        total = 0
        for h, a in zip(hidden, attn):
            cat = (h.grad * h.detach()).sum(-1)[0]  # (N,)
            a = a[0].mean(0)  # heads -> (N, N)
            if query == "all":
                alpha = a.mean(0)
            elif model.global_pool == "avg":
                alpha = a[npre:].mean(0)
            else:
                alpha = a[0]
            total = total + alpha * cat
        out.append(total[npre:])
    model.zero_grad(set_to_none=True)
    return torch.stack(out)


@pytest.mark.parametrize(
    "query,kwargs",
    [
        ("all", {}),
        ("class", {}),
        ("all", {"reg_tokens": 2}),
        ("class", {"global_pool": "avg"}),
    ],
)
def test_equals_naive(query, kwargs):
    model = timm_vit(**kwargs).double()
    x = images(3).double()
    target = torch.tensor([0, 4, 2])
    expected = naive_attcat(model, x, target, query)
    got = cv.AttCAT(model, query=query).attribute(x, target=target, output="tokens")
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-9, atol=1e-12)


def test_signed_and_class_specific():
    model, x = timm_vit(), images(2)
    method = cv.AttCAT(model)
    a = method.attribute(x, target=0, output="tokens")
    b = method.attribute(x, target=1, output="tokens")
    assert (a < 0).any() and (a > 0).any()  # no ReLU: the sign is kept
    assert not torch.allclose(a, b)


def test_bad_options():
    with pytest.raises(ValueError, match="query"):
        cv.AttCAT(timm_vit(), query="rows")
