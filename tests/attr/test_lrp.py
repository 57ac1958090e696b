"""The LRP methods beyond the contract.

They are in ``test_contract.METHODS``; here: a frozen model under
``torch.no_grad()``, timm variants (average pooling, layer scale with
registers, distilled DeiT) explained batch-independently, and no parameter
gradient in any relevance pass.
"""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from tests.models import (
    CLASSES,
    images,
    timm_vit,
)
from tests.tolerance import assert_close_to_scale

TARGET = torch.tensor([0, 3, 1, 4])


@pytest.fixture(scope="module")
def model():
    return timm_vit()


@pytest.fixture(scope="module")
def x():
    return images(4)


def test_no_grad_context_and_frozen_model(model, x):
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            rel = cv.LRP(model).attribute(x, target=TARGET)
            ta = cv.TransformerLRP(model).attribute(x, target=TARGET)
        assert rel.abs().sum() > 0 and ta.abs().sum() > 0
        assert all(not p.requires_grad for p in model.parameters())
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


def test_other_timm_variants():
    """Average pooling, layer scale, distilled DeiT: batch-1 == batch-3."""
    from timm.models.deit import VisionTransformerDistilled

    x = images(3)
    variants = [
        timm_vit(global_pool="avg", class_token=False, fc_norm=True),
        timm_vit(init_values=0.5, reg_tokens=2),
        VisionTransformerDistilled(
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            num_classes=CLASSES,
        ).eval(),
    ]
    for model in variants:
        for method in (cv.LRP(model), cv.AttnLRP(model), cv.TransformerLRP(model)):
            batched = method.attribute(x, target=1, output="tokens")
            single = method.attribute(x[2:], target=1, output="tokens")
            assert torch.isfinite(batched).all()
            assert_close_to_scale(single, batched[2:3], 1e-4)


def _reachable_leaves(root):
    """Every tensor an AccumulateGrad node of ``root``'s graph would write."""
    seen, stack, leaves = set(), [root], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            leaves.append(node.variable)
        stack.extend(n for n, _ in node.next_functions)
    return leaves


@pytest.mark.parametrize(
    "make",
    [
        lambda m: cv.LRP(m),
        lambda m: cv.LRP(m, rules="original"),
        lambda m: cv.AttnLRP(m),
        lambda m: cv.AttnLRP(m, epsilon=1e-6),
        lambda m: cv.AttnLRP(m, attention="cp"),
        lambda m: cv.PartialLRP(m),
        lambda m: cv.TransformerLRP(m),
        lambda m: cv.TransformerLRP(m, method="lrp_rollout"),
    ],
    ids=[
        "lrp",
        "lrp_original",
        "attn_lrp",
        "attn_lrp_eps",
        "attn_lrp_cp",
        "partial_lrp",
        "transformer_lrp",
        "lrp_rollout",
    ],
)
def test_no_parameter_gradient(model, x, make):
    """No relevance pass computes or stores a parameter gradient: no ``.grad``
    appears, no gradient hook of a parameter fires, and the graph the rules
    build reaches no weight or bias of a module they replace (so nothing is
    saved for a weight gradient either). Only the positional embedding and
    the prefix tokens, which the adapter's own code adds, stay in the graph,
    and autograd never computes their gradient."""
    method = make(model)
    fired = []
    handles = [
        p.register_hook(lambda g, n=n: fired.append(n))
        for n, p in model.named_parameters()
    ]
    graphs = []
    forward = method.adapter.forward

    def capture(*args, **kwargs):
        out = forward(*args, **kwargs)
        graphs.append(out.grad_fn)
        return out

    method.adapter.forward = capture
    try:
        method.attribute(x, target=TARGET)
    finally:
        del method.adapter.forward
        for h in handles:
            h.remove()
    assert fired == []
    assert all(p.grad is None for p in model.parameters())
    leaves = {id(t) for t in _reachable_leaves(graphs[0])}
    in_graph = {n for n, p in model.named_parameters() if id(p) in leaves}
    assert in_graph <= {"pos_embed", "cls_token"}, in_graph
    # the stock baseline does compute them
    model(x).sum().backward()
    try:
        assert all(p.grad is not None for p in model.parameters())
    finally:
        model.zero_grad(set_to_none=True)
