"""The token graph's pieces by hand, and a plain ViT through the graph path
giving exactly today's maps (the dense formulas of the methods before the
graph, in float64), attention-pooled models included: their graph's pooling
row is the pooling attention the traced forward recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import captum_vit as cv
from captum_vit.adapters import patch_merge_2x2, window_index
from captum_vit.attr._graph import MixingTracer, compose, pool_row, through_layer
from captum_vit.attr.attention_flow import max_flows_to_inputs
from tests.clip_models import hf_siglip, open_clip_attnpool
from tests.models import (
    hf_vit_from_timm,
    images,
    timm_swin,
    timm_vit,
    torchvision_vit_from_timm,
)


# ------------------------------------------------------------------ pieces
def test_window_index_by_hand():
    # 4x4 grid, 2x2 windows, no shift: four windows, row-major
    idx = window_index((4, 4), (2, 2), (0, 0), pad_first=False)
    assert idx.tolist() == [
        [0, 1, 4, 5],
        [2, 3, 6, 7],
        [8, 9, 12, 13],
        [10, 11, 14, 15],
    ]
    # shift by 1: window 0 of the rolled grid starts at token (1, 1)
    idx = window_index((4, 4), (2, 2), (1, 1), pad_first=False)
    assert idx[0].tolist() == [5, 6, 9, 10]
    assert idx[3].tolist() == [15, 12, 3, 0]  # wraps around both axes
    # 3x3 grid padded to 4x4: pad after the roll (timm) or before (HF, tv)
    after = window_index((3, 3), (2, 2), (1, 1), pad_first=False)
    before = window_index((3, 3), (2, 2), (1, 1), pad_first=True)
    assert after[0].tolist() == [4, 5, 7, 8]
    assert before[0].tolist() == [4, 5, 7, 8]
    assert after[3].tolist() == [0, -1, -1, -1]
    assert before[3].tolist() == [-1, -1, -1, 0]
    for idx in (after, before):
        real = idx[idx >= 0]
        assert sorted(real.tolist()) == list(range(9))
    # prefix tokens shift the ids
    assert window_index((2, 2), (2, 2), (0, 0), False, 1).tolist() == [[1, 2, 3, 4]]


def test_patch_merge_by_hand():
    m = patch_merge_2x2((4, 4))
    assert m.index[0].tolist() == [0, 4, 1, 5]  # timm's/HF's channel order
    assert torch.equal(m.weight, torch.full((4, 4), 0.25, dtype=torch.float64))
    odd = patch_merge_2x2((3, 3))  # padded to 4x4 by the model
    assert odd.index.shape == (4, 4)
    assert odd.index[3].tolist() == [8, -1, -1, -1]
    assert odd.weight[3].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert odd.index[1].tolist() == [2, 5, -1, -1]  # column 3 is padding
    assert odd.weight[1].tolist() == [0.5, 0.5, 0.0, 0.0]
    torch.testing.assert_close(odd.weight.sum(1), torch.ones(4, dtype=torch.float64))


def test_row_operators_equal_dense_matrices():
    g = torch.Generator().manual_seed(0)
    idx = window_index((3, 3), (2, 2), (1, 1), pad_first=True)
    from captum_vit.adapters import LayerWindows

    lw = LayerWindows(0, idx)
    M = torch.rand(2, 4, 4, 4, generator=g, dtype=torch.float64)
    dense = torch.zeros(2, 9, 9, dtype=torch.float64)
    for k in range(4):
        for p in range(4):
            for q in range(4):
                i, j = int(idx[k, p]), int(idx[k, q])
                if i >= 0 and j >= 0:
                    dense[:, i, j] = M[:, k, p, q]
    v = torch.rand(2, 9, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        through_layer(v, M, lw), torch.einsum("bi,bij->bj", v, dense)
    )


# ------------------------------------------------- plain ViT = today's maps
PLAIN = {
    "timm": lambda: timm_vit().double(),
    "timm_avg": lambda: timm_vit(global_pool="avg").double(),
    "timm_distilled": lambda: timm_vit(distilled=True).double(),
    "hf": lambda: hf_vit_from_timm(timm_vit()).double(),
    "torchvision": lambda: torchvision_vit_from_timm(timm_vit()).double(),
    # attention pooling: the pooling row is recorded per sample
    "timm_map": lambda: timm_vit(global_pool="map").double(),
    "siglip": lambda: hf_siglip().double(),
    "open_clip_attnpool": lambda: open_clip_attnpool().double(),
}
TARGET = torch.tensor([0, 3, 1])


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _dense(model, x):
    """Today's inputs: the tracer's attention list and its target gradients,
    and the pooling row (per sample) of an attention-pooled model."""
    adapter = cv.adapters.get(model)
    method = cv.GenericAttention(model)
    tracer, _, _, grads = method._trace(x, TARGET, (), grad=True)
    attns = [a.detach() for a in tracer.attention_list()]
    return adapter, attns, grads, tracer.pool_row()


def _pool(adapter, pool, N):
    """The pooling row of each of the 3 samples ``(3, N)``."""
    if pool is not None:
        return pool
    return adapter.pool_weights(N, dtype=torch.float64).expand(3, N)


def _row(adapter, matrix, pool=None):
    w = _pool(adapter, pool, matrix.shape[-1])
    return torch.einsum("bn,bnm->bm", w, matrix)[:, adapter.num_prefix_tokens :]


@pytest.mark.parametrize("family", list(PLAIN))
def test_plain_vit_through_the_graph_gives_todays_maps(family):
    model = PLAIN[family]()
    x = images(3).double()
    adapter, attns, grads, pool = _dense(model, x)
    assert adapter.plain and adapter.token_graph((32, 32)).plain
    assert (pool is None) == (adapter.pooling != "attention")
    N = attns[0].shape[-1]
    eye = torch.eye(N, dtype=torch.float64)

    def check(method, expected, **kw):
        got = method.attribute(x, target=TARGET, output="tokens", **kw)
        assert _rel(got.reshape(expected.shape), expected) < 1e-12, type(method)

    # AttentionRollout (today: J = hat A^(L-1) ... hat A^(s), class row)
    for fusion in ("mean", "max"):
        op = {"mean": torch.mean, "max": torch.amax}[fusion]
        J = None
        for a in attns:
            h = op(a, dim=1) + eye
            h = h / h.sum(-1, keepdim=True)
            J = h if J is None else h @ J
        check(cv.AttentionRollout(model, head_fusion=fusion), _row(adapter, J, pool))
    # RawAttention
    check(cv.RawAttention(model, layer=0), _row(adapter, attns[0].mean(1), pool))
    # GenericAttention (R <- R + cam R)
    R = eye.expand(3, N, N)
    for a, g in zip(attns, grads):
        R = R + (g * a).clamp(min=0).mean(1) @ R
    check(cv.GenericAttention(model), _row(adapter, R, pool))
    # GradSAM, both queries
    total = sum((a * g.clamp(min=0)).mean(1) for a, g in zip(attns, grads)) / len(attns)
    check(cv.GradSAM(model), _row(adapter, total, pool))
    npre = adapter.num_prefix_tokens
    check(cv.GradSAM(model, query="all"), total.mean(1)[:, npre:])
    # AttentionFlow: the dense network of today
    caps = cv.AttentionFlow(model).capacities(attns).numpy()
    w = _pool(adapter, pool, N).numpy()
    flows = np.stack([max_flows_to_inputs(c, wb, 1e-12)[0] for c, wb in zip(caps, w)])
    flows = flows / flows.sum(1, keepdims=True)
    check(cv.AttentionFlow(model, rtol=1e-12), torch.from_numpy(flows[:, npre:]))


@pytest.mark.parametrize("family", ["timm", "timm_map"])
def test_transformer_lrp_combination_is_todays(family):
    """TransformerLRP's product over the graph equals today's dense
    ``(cam + I)`` product of the same relevances and gradients, read with
    the pooling row (recorded for attention pooling)."""
    from captum_vit.attr._lrp import RuleSet, relevance_pass

    model = PLAIN[family]()
    x = images(3).double()
    adapter = cv.adapters.get(model)
    pool = cv.GenericAttention(model)._trace(x, TARGET, ())[0].pool_row()
    L = adapter.num_layers
    _, _, rel, grads = relevance_pass(
        adapter, RuleSet(), x, TARGET, (), False, range(L), True
    )
    N = rel[0].shape[-1]
    J = None
    for layer in range(L):
        M = (grads[layer] * rel[layer]).clamp(min=0).mean(1) + torch.eye(
            N, dtype=torch.float64
        )
        J = M if J is None else M @ J
    got = cv.TransformerLRP(model).attribute(x, target=TARGET, output="tokens")
    assert _rel(got.flatten(1), _row(adapter, J, pool)) < 1e-12


# ------------------------------------------------------ memory of rollout
def test_rollout_keeps_one_product_on_plain_and_blocks_on_windows():
    model = timm_vit()
    x = images(2)
    adapter = cv.adapters.get(model)
    graph = adapter.token_graph((32, 32))
    tracer = MixingTracer(graph, "mean", range(1, adapter.num_layers))
    assert not tracer.explicit(0) and tracer.explicit(1)  # fused before start
    with torch.no_grad(), adapter.trace(tracer):
        adapter.forward(x)
    assert tracer.ops == {} and tracer.joint.shape == (2, 17, 17)
    assert tracer.attentions == {}
    swin = timm_swin()
    adapter = cv.adapters.get(swin)
    graph = adapter.token_graph((32, 32))
    tracer = MixingTracer(graph, "mean", range(adapter.num_layers))
    with torch.no_grad(), adapter.trace(tracer):
        adapter.forward(x)
    assert tracer.joint is None
    # per layer (B, nW, n, n): 4 windows of 16 tokens, then one window
    assert [tuple(t.shape) for t in tracer.ops.values()] == [
        (2, 4, 16, 16),
        (2, 4, 16, 16),
        (2, 1, 16, 16),
        (2, 1, 16, 16),
    ]
    row = tracer.row()
    expected = compose(graph, tracer.ops, pool_row(graph, 1, 2, row.dtype))
    torch.testing.assert_close(row, expected)
