"""The token graph of Swin: windows, shifts and merges against a naive dense
re-implementation (``tests/naive_swin.py``), the adapters' traced forwards
against the models' own, and family twins (timm / Hugging Face / torchvision
with the same weights) giving the same maps."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

import captum_vit as cv
from captum_vit.adapters import Tracer
from tests import naive_swin
from tests.models import (
    hf_swin_from_timm,
    images,
    timm_swin,
    torchvision_swin_from_timm,
)

TARGET = torch.tensor([0, 3, 1])


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


@pytest.fixture(scope="module", params=[False, True], ids=["v1", "v2"])
def swin64(request):
    return timm_swin(v2=request.param).double()


@pytest.fixture(scope="module")
def x64():
    return images(3).double()


@pytest.fixture(scope="module")
def dense(swin64, x64):
    """Dense per-layer attentions, their target-logit gradients (one image at
    a time) and the merge maps, from the naive forward."""
    attns, grads = [], []
    for i in range(x64.shape[0]):
        logits, a, merges = naive_swin.forward(swin64, x64[i : i + 1])
        g = torch.autograd.grad(logits[0, int(TARGET[i])], a)
        attns.append([t.detach() for t in a])
        grads.append(g)
    L = len(attns[0])
    A = [torch.cat([attns[i][j] for i in range(len(attns))]) for j in range(L)]
    G = [torch.cat([grads[i][j] for i in range(len(grads))]) for j in range(L)]
    return A, G, merges


def _stages(model):
    return [s for s, stage in enumerate(model.layers) for _ in stage.blocks]


def _product(mats, merges, stages):
    """Dense ``M^(L-1) ... P ... M^(0)`` ``(B, N_S, N_0)``."""
    J = None
    for layer, M in enumerate(mats):
        if J is not None and stages[layer] != stages[layer - 1]:
            J = torch.einsum("ij,bjk->bik", merges[stages[layer] - 1], J)
        J = M if J is None else M @ J
    return J


def _mean_row(n, B):
    return torch.full((B, n), 1.0 / n, dtype=torch.float64)


def _to_first(v, merges, stage):
    for s in range(stage - 1, -1, -1):
        v = v @ merges[s]
    return v


# ------------------------------------------------------------- the reference
def test_naive_forward_is_the_model(swin64, x64):
    logits, _, _ = naive_swin.forward(swin64, x64)
    torch.testing.assert_close(logits, swin64(x64), rtol=1e-12, atol=1e-12)
    if type(swin64).__name__ == "SwinTransformerV2":
        table = swin64.layers[0].blocks[0].attn.relative_coords_table[0]
        torch.testing.assert_close(
            naive_swin._log_coords((4, 4)), table.double(), rtol=0, atol=1e-6
        )


# ------------------------------------------- dense vs windowed, every method
def test_rollout_dense_equals_windowed(swin64, x64, dense):
    A, _, merges = dense
    stages = _stages(swin64)
    for fusion in ("mean", "max", "min"):
        op = {"mean": torch.mean, "max": torch.amax, "min": torch.amin}[fusion]
        mats = []
        for a in A:
            f = op(a, dim=1)
            f = f + torch.eye(f.shape[-1], dtype=f.dtype)
            mats.append(f / f.sum(-1, keepdim=True))
        J = _product(mats, merges, stages)
        expected = torch.einsum("bn,bnm->bm", _mean_row(J.shape[1], 3), J)
        got = cv.AttentionRollout(swin64, head_fusion=fusion).attribute(
            x64, output="tokens"
        )
        assert _rel(got.flatten(1), expected) < 1e-12, fusion
    # start_layer: the layers before it are the identity, the merge stays
    J = _product(mats[2:], merges, stages[2:]) @ merges[0]
    expected = torch.einsum("bn,bnm->bm", _mean_row(J.shape[1], 3), J)
    got = cv.AttentionRollout(swin64, head_fusion="min", start_layer=2).attribute(
        x64, output="tokens"
    )
    assert _rel(got.flatten(1), expected) < 1e-12


def test_rollout_discard_counts_window_entries(swin64, x64, dense):
    A, _, merges = dense
    stages = _stages(swin64)
    ratio = 0.3
    mats = []
    for a in A:
        f = a.mean(1).clone()
        structure = a[0, 0] > 0  # the window entries (-inf elsewhere)
        for b in range(f.shape[0]):
            vals = f[b][structure]
            k = int(vals.numel() * ratio)
            keep = f[b, 0, 0].clone()
            cut = vals.sort().values[k - 1]
            f[b][structure & (f[b] <= cut)] = 0.0
            f[b, 0, 0] = keep
        f = f + torch.eye(f.shape[-1], dtype=f.dtype)
        mats.append(f / f.sum(-1, keepdim=True))
    J = _product(mats, merges, stages)
    expected = torch.einsum("bn,bnm->bm", _mean_row(J.shape[1], 3), J)
    got = cv.AttentionRollout(swin64, discard_ratio=ratio).attribute(
        x64, output="tokens"
    )
    assert _rel(got.flatten(1), expected) < 1e-12


def test_raw_attention_dense_equals_windowed(swin64, x64, dense):
    A, _, merges = dense
    stages = _stages(swin64)
    for layer in range(len(A)):
        s = stages[layer]
        n = A[layer].shape[-1]
        fused = torch.einsum("bn,bnm->bm", _mean_row(n, 3), A[layer].mean(1))
        expected = _to_first(fused, merges, s)
        got = cv.RawAttention(swin64, layer=layer).attribute(x64, output="tokens")
        assert _rel(got.flatten(1), expected) < 1e-12, layer
        head = cv.RawAttention(swin64, layer=layer, head=1).attribute(
            x64, output="tokens"
        )
        row = torch.einsum("bn,bnm->bm", _mean_row(n, 3), A[layer][:, 1])
        assert _rel(head.flatten(1), _to_first(row, merges, s)) < 1e-12
    per_head = cv.RawAttention(swin64, layer=-1, head_fusion=None)
    got = per_head.attribute(x64, output="tokens")
    assert got.shape == (3, A[-1].shape[1], 8, 8)
    row = torch.einsum("n,bhnm->bhm", _mean_row(16, 1)[0], A[-1])
    expected = _to_first(row.reshape(-1, 16), merges, 1).reshape(3, -1, 64)
    assert _rel(got.flatten(2), expected) < 1e-12
    windows = per_head.attention_matrix(x64)
    assert windows.shape == (3, 1, A[-1].shape[1], 16, 16)


def test_generic_attention_and_grad_sam_dense_equal_windowed(swin64, x64, dense):
    A, G, merges = dense
    stages = _stages(swin64)
    for start in (0, 1, 3):
        mats = []
        for layer, (a, g) in enumerate(zip(A, G)):
            cam = (g * a).clamp(min=0).mean(1)
            eye = torch.eye(cam.shape[-1], dtype=cam.dtype)
            mats.append(cam + eye if layer >= start else eye.expand_as(cam))
        J = _product(mats, merges, stages)
        expected = torch.einsum("bn,bnm->bm", _mean_row(J.shape[1], 3), J)
        got = cv.GenericAttention(swin64, start_layer=start).attribute(
            x64, target=TARGET, output="tokens"
        )
        assert _rel(got.flatten(1), expected) < 1e-12, start
    total = 0
    for layer, (a, g) in enumerate(zip(A, G)):
        m = (a * g.clamp(min=0)).mean(1)
        row = torch.einsum("bn,bnm->bm", _mean_row(m.shape[-1], 3), m)
        total = total + _to_first(row, merges, stages[layer])
    expected = total / len(A)
    for query in ("class", "all"):  # no prefix token: the same row
        got = cv.GradSAM(swin64, query=query).attribute(
            x64, target=TARGET, output="tokens"
        )
        assert _rel(got.flatten(1), expected) < 1e-12, query


def _networkx_flows(mats, merges, stages, w):
    """Max flow from a source feeding the last stage with ``w`` to every input
    token, on the dense layered graph (zero-capacity edges included)."""
    G = nx.DiGraph()
    level = [("out", i) for i in range(len(w))]
    for i, cap in enumerate(w):
        G.add_edge("s", level[i], capacity=float(cap))
    depth = 0
    for layer in range(len(mats) - 1, -1, -1):
        if layer < len(mats) - 1 and stages[layer] != stages[layer + 1]:
            P = merges[stages[layer]].numpy()
            nxt = [(depth, "m", j) for j in range(P.shape[1])]
            for i in range(P.shape[0]):
                for j in np.flatnonzero(P[i]):
                    G.add_edge(level[i], nxt[j], capacity=float(P[i, j]))
            level, depth = nxt, depth + 1
        M = mats[layer]
        nxt = [(depth, "t", j) for j in range(M.shape[1])]
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                G.add_edge(level[i], nxt[j], capacity=float(M[i, j]))
        level, depth = nxt, depth + 1
    algo = nx.algorithms.flow.edmonds_karp
    return np.array([nx.maximum_flow(G, "s", v, flow_func=algo)[0] for v in level])


def test_attention_flow_dense_equals_windowed(swin64, x64, dense):
    A, _, merges = dense
    stages = _stages(swin64)
    mats = []
    for a in A:
        f = a[:1].mean(1)[0]
        f = f + torch.eye(f.shape[-1], dtype=f.dtype)
        mats.append((f / f.sum(-1, keepdim=True)).numpy())
    w = np.full(mats[-1].shape[0], 1.0 / mats[-1].shape[0])
    flows = _networkx_flows(mats, merges, stages, w)
    expected = torch.from_numpy(flows / flows.sum())
    method = cv.AttentionFlow(swin64, rtol=1e-12)
    got = method.attribute(x64[:1], output="tokens")
    assert _rel(got.flatten(1)[0], expected) < 1e-10


# --------------------------------------------------- the windows themselves
FAMILIES = {
    "timm": lambda m: m,
    "hf": hf_swin_from_timm,
    "torchvision": torchvision_swin_from_timm,
}


def _windowed_inputs(model, x):
    """The windowed tokens each block's first q/k/v linear sees, and the
    tokens the window partition was made from (the norm1 output for pre-norm
    blocks, the block input for v2)."""
    adapter = cv.adapters.get(model)
    seen = {}
    hooks = []
    for layer in range(adapter.num_layers):
        lin = adapter.block_parts(layer).qkv[0]
        hooks.append(
            lin.register_forward_pre_hook(
                lambda m, a, _l=layer: seen.__setitem__(_l, a[0].detach())
            )
        )
    tracer = Tracer(keep_attention=False, keep_blocks=True)
    try:
        with torch.no_grad(), adapter.trace(tracer):
            adapter.forward(x)
    finally:
        for h in hooks:
            h.remove()
    sources = {}
    for layer in range(adapter.num_layers):
        parts = adapter.block_parts(layer)
        t = tracer.block_inputs[layer].detach()
        sources[layer] = t if parts.post_norm else parts.norm1(t)
    return adapter, seen, sources


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("size", [32, 40, 44])
def test_index_map_is_the_models_partition(family, v2, size):
    """Window position p of window k holds stage token index[k, p] (zeros
    where the model pads): read from the tokens the model's own window code
    feeds to the attention, for sizes that need padding (40: a 10x10 grid
    padded to 12x12 with 4x4 windows, then 5x5 padded to 8x8; 44: odd grids
    also padded by the merging)."""
    base = timm_swin(v2=v2, strict_img_size=False)
    model = FAMILIES[family](base)
    x = images(2, size=size)
    adapter, seen, sources = _windowed_inputs(model, x)
    graph = adapter.token_graph((size, size))
    for layer, lw in enumerate(graph.layers):
        t = sources[layer]
        assert t.shape[1] == graph.stages[lw.stage].num_tokens
        expected = t[:, lw.index.clamp(min=0)] * (lw.index >= 0)[None, :, :, None]
        got = seen[layer].reshape(expected.shape)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ------------------------------------------- traced forward = model forward
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_traced_forward_is_the_models(family, v2):
    base = timm_swin(v2=v2, strict_img_size=False)
    for size in (32, 40):
        x = images(2, size=size)
        for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
            model = FAMILIES[family](base).to(dtype)
            adapter = cv.adapters.get(model)
            with torch.no_grad():
                expected = adapter.forward(x.to(dtype))
                with adapter.trace(Tracer()) as tracer:
                    got = adapter.forward(x.to(dtype))
            assert len(tracer.attentions) == adapter.num_layers
            assert _rel(got, expected) < tol, (size, dtype)


def test_timm_fused_attention_is_traced_too():
    model = timm_swin()
    x = images(2)
    expected = model(x)
    fused = timm_swin()
    for m in fused.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = True
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-6)
    a = cv.AttentionRollout(fused).attribute(x, output="tokens")
    b = cv.AttentionRollout(model).attribute(x, output="tokens")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------- family twins
TWIN_METHODS = [
    ("raw_attention", lambda m: cv.RawAttention(m)),
    ("raw_attention_l1_h0", lambda m: cv.RawAttention(m, layer=1, head=0)),
    ("rollout", lambda m: cv.AttentionRollout(m)),
    ("rollout_max", lambda m: cv.AttentionRollout(m, head_fusion="max")),
    ("grad_sam", lambda m: cv.GradSAM(m)),
    ("generic_attention", lambda m: cv.GenericAttention(m)),
    ("attention_flow", lambda m: cv.AttentionFlow(m)),
    ("vit_gradcam", lambda m: cv.ViTGradCam(m)),
    ("transformer_lrp", lambda m: cv.TransformerLRP(m)),
    ("lrp", lambda m: cv.LRP(m)),
    ("attn_lrp", lambda m: cv.AttnLRP(m)),
]


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("name,factory", TWIN_METHODS, ids=[m[0] for m in TWIN_METHODS])
def test_family_twins_give_the_same_maps(name, factory, v2):
    base = timm_swin(v2=v2)
    x = images(3)
    expected = factory(base).attribute(x, target=TARGET, output="tokens")
    for family in ("hf", "torchvision"):
        got = factory(FAMILIES[family](base)).attribute(
            x, target=TARGET, output="tokens"
        )
        assert _rel(got, expected) < 1e-4, family


# --------------------------------------------------------------------- LRP
def _dense_blocks(blocks, lw, N):
    """Windowed blocks ``(B, nW, H, n, n)`` as dense ``(B, H, N, N)``."""
    B, nW, H, n, _ = blocks.shape
    out = blocks.new_zeros(B, H, N, N)
    for k in range(nW):
        idx = lw.index[k]
        real = (idx >= 0).nonzero().flatten()
        tok = idx[real]
        out[:, :, tok[:, None], tok[None, :]] = blocks[:, k][:, :, real][:, :, :, real]
    return out


def test_transformer_lrp_product_dense_equals_windowed(swin64, x64):
    """The graph's product of TransformerLRP's (gradient x relevance) blocks
    equals the dense product with dense merge maps."""
    from captum_vit.attr._lrp import RuleSet, relevance_pass

    adapter = cv.adapters.get(swin64)
    graph = adapter.token_graph((32, 32))
    L = adapter.num_layers
    _, _, rel, grads = relevance_pass(
        adapter, RuleSet(), x64, TARGET, (), False, range(L), True
    )
    stages = _stages(swin64)
    mats = []
    for layer, lw in enumerate(graph.layers):
        N = graph.stages[lw.stage].num_tokens
        cam = grads[layer] * rel[layer]
        dense = _dense_blocks(cam.reshape(3, lw.num_windows, *cam.shape[1:]), lw, N)
        mats.append(dense.clamp(min=0).mean(1) + torch.eye(N, dtype=torch.float64))
    merges = [naive_swin.merge_map(s.grid) for s in graph.stages[:-1]]
    J = _product(mats, merges, stages)
    expected = torch.einsum("bn,bnm->bm", _mean_row(J.shape[1], 3), J)
    got = cv.TransformerLRP(swin64).attribute(x64, target=TARGET, output="tokens")
    assert _rel(got.flatten(1), expected) < 1e-12


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lrp_conserves_through_windows_and_merging(family, swin64, x64):
    """Chefer et al.'s rules conserve (relevance starts at one on the target
    logit): the input relevance of every image sums to one (up to the rules'
    stabilisers), through the window partition, the shift, the merging and
    the average pooling."""
    model = FAMILIES[family](swin64).double()
    rel = cv.LRP(model).attribute(x64, target=TARGET)
    torch.testing.assert_close(
        rel.flatten(1).sum(1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-6
    )
