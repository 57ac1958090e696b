"""CaiT's two-phase token graph against a naive dense re-implementation
(``tests/naive_cait.py``): the adapter's traced forward and recorded
attention against the model's own and the naive ones, every graph method
against the definitions of docs/token_graph.rst ("CaiT: two phases")
composed densely in float64, LRP conservation through talking heads and
layer scale, and the methods that refuse CaiT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import captum_vit as cv
from captum_vit import adapters
from captum_vit.adapters import Tracer, UnsupportedModelError
from captum_vit.attr._lrp import RuleSet, lrp_context
from tests import naive_cait
from tests.attr.test_swin_graph import _networkx_flows, attention_relevance
from tests.models import HEADS, images, timm_cait
from tests.tolerance import assert_close_to_scale

TARGET = torch.tensor([0, 3, 1])
FUSE = {"mean": torch.mean, "max": torch.amax, "min": torch.amin}


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


@pytest.fixture(scope="module")
def cait64():
    return timm_cait().double()


@pytest.fixture(scope="module")
def x64():
    return images(3).double()


@pytest.fixture(scope="module")
def dense(cait64, x64):
    """The naive forward's attentions and their target-logit gradients."""
    logits, attns = naive_cait.forward(
        cait64, x64.requires_grad_(False).clone().requires_grad_(True), HEADS
    )
    score = logits.gather(1, TARGET[:, None]).sum()
    grads = torch.autograd.grad(score, attns)
    return [a.detach() for a in attns], list(grads)


def _depth(model):
    return len(model.blocks)


def _compose(sa, ca, P):
    """``e_0 M_CA^(last) ... M_CA^(0) merge M_SA^(last) ... M_SA^(0)``: the
    class token's row over the patches, ``(B, P)``; ``sa`` dense ``(B, P, P)``
    matrices, ``ca`` class rows ``(B, 1 + P)``, first layer first."""
    B = (sa or ca)[0].shape[0]
    v = torch.zeros(B, P + 1, dtype=torch.float64)
    v[:, 0] = 1.0
    for row in reversed(ca):
        v = torch.einsum("bn,bnm->bm", v, naive_cait.dense_class_layer(row))
    v = v @ naive_cait.merge(P)
    for M in reversed(sa):
        v = torch.einsum("bn,bnm->bm", v, M)
    return v


def _e0(row):
    out = row.clone()
    out[:, 0] += 1.0
    return out


# ------------------------------------------------------------- the reference
def test_naive_forward_is_the_model(cait64, x64):
    logits, _ = naive_cait.forward(cait64, x64, HEADS)
    torch.testing.assert_close(logits, cait64(x64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_traced_forward_is_the_models(fused, dtype, tol):
    """The explicit forwards (talking heads, class attention, with and
    without the ends, some layers only) compute the model's own logits with
    its default fused class attention, and leave no attribute behind."""
    model = timm_cait().to(dtype)
    for blk in model.blocks_token_only:
        assert blk.attn.fused_attn  # timm's default
        blk.attn.fused_attn = fused
    x = images(3).to(dtype)
    ad = adapters.get(model)
    expected = model(x)

    class Ends(Tracer):
        trace_ends = True

    for tracer in (Tracer(keep_scores=True), Ends(), Tracer(layers=[2])):
        with torch.no_grad(), ad.trace(tracer):
            got = ad.forward(x)
        assert _rel(got, expected) < tol
        for blk in ad.blocks():
            assert "forward" not in blk.__dict__ and "forward" not in blk.attn.__dict__
        assert "forward_features" not in model.__dict__
    assert sorted(tracer.attentions) == [2]  # the talking heads always explicit


def test_recorded_attention_is_what_multiplies_v(cait64, x64, dense):
    """Self-attention layers record the talking-heads attention after
    ``proj_w`` ``(B, H, P, P)``, class-attention layers the class row
    ``(B, H, 1, 1 + P)``; both equal the naive forward's."""
    A, _ = dense
    tracer = Tracer()
    with torch.no_grad(), adapters.get(cait64).trace(tracer):
        cait64(x64)
    got = tracer.attention_list()
    assert [tuple(a.shape) for a in got] == [(3, 2, 16, 16)] * 2 + [(3, 2, 1, 17)]
    for g, a in zip(got, A):
        assert _rel(g, a) < 1e-12
    # talking heads: not row-stochastic (the mixing is not a softmax's)
    assert (got[0].sum(-1) - 1).abs().max() > 1e-2


def test_graph_and_description():
    ad = adapters.get(timm_cait())
    assert type(ad).__name__ == "TimmCaitAdapter"
    assert not ad.plain and ad.class_attention and ad.num_layers == 3
    g = ad.token_graph((32, 32))
    assert [s.num_tokens for s in g.stages] == [16, 17]
    assert [lw.stage for lw in g.layers] == [0, 0, 1]
    assert g.layers[2].queries.tolist() == [0] and g.layers[0].queries is None
    assert torch.equal(
        g.merges[0].weight[:, 0], torch.tensor([0.0] + [1.0] * 16).double()
    )
    assert g.pool.tolist() == [1.0] + [0.0] * 16
    assert not g.plain


# ------------------------------------------------- dense vs graph, every method
@pytest.mark.parametrize("fusion", list(FUSE))
def test_rollout(cait64, x64, dense, fusion):
    A, _ = dense
    D, P = _depth(cait64), A[0].shape[-1]
    op = FUSE[fusion]
    sa = []
    for a in A[:D]:
        f = op(a, dim=1) + torch.eye(P, dtype=torch.float64)
        sa.append(f / f.sum(-1, keepdim=True))
    ca = []
    for a in A[D:]:
        r = _e0(op(a, dim=1)[:, 0])
        ca.append(r / r.sum(-1, keepdim=True))
    expected = _compose(sa, ca, P)
    got = cv.AttentionRollout(cait64, head_fusion=fusion).attribute(
        x64, output="tokens"
    )
    assert _rel(got.flatten(1), expected) < 1e-10
    # start_layer in the class-attention phase: the first phase is the identity
    got = cv.AttentionRollout(cait64, head_fusion=fusion, start_layer=D).attribute(
        x64, output="tokens"
    )
    assert _rel(got.flatten(1), _compose([], ca, P)) < 1e-10


def test_raw_attention_of_each_phase(cait64, x64, dense):
    """A class-attention layer's map is its class row over the patches; a
    self-attention layer's is the mean over its (patch) query rows."""
    A, _ = dense
    D = _depth(cait64)
    for layer, a in enumerate(A):
        if layer < D:
            expected = a.mean(1).mean(1)
            per_head = a.mean(2)
        else:
            expected = a.mean(1)[:, 0, 1:]
            per_head = a[:, :, 0, 1:]
        got = cv.RawAttention(cait64, layer=layer).attribute(x64, output="tokens")
        assert _rel(got.flatten(1), expected) < 1e-10, layer
        heads = cv.RawAttention(cait64, layer=layer, head_fusion=None)
        got = heads.attribute(x64, output="tokens")
        assert _rel(got.flatten(2), per_head) < 1e-10, layer


def test_generic_attention_and_grad_sam(cait64, x64, dense):
    A, G = dense
    D, P = _depth(cait64), A[0].shape[-1]
    cams = [(g * a).clamp(min=0).mean(1) for a, g in zip(A, G)]
    sa = [c + torch.eye(P, dtype=torch.float64) for c in cams[:D]]
    ca = [_e0(c[:, 0]) for c in cams[D:]]
    got = cv.GenericAttention(cait64).attribute(x64, target=TARGET, output="tokens")
    assert _rel(got.flatten(1), _compose(sa, ca, P)) < 1e-10

    sams = [(a * g.clamp(min=0)).mean(1) for a, g in zip(A, G)]
    rows = [m.mean(1) for m in sams[:D]] + [m[:, 0, 1:] for m in sams[D:]]
    expected = torch.stack(rows).mean(0)
    for query in ("class", "all"):  # the same on CaiT: see the docs
        got = cv.GradSAM(cait64, query=query).attribute(
            x64, target=TARGET, output="tokens"
        )
        assert _rel(got.flatten(1), expected) < 1e-10, query


def test_transformer_lrp_combination(cait64, x64):
    """TransformerLRP's product over the two phases, with the relevance and
    gradients the LRP engine gives at each layer's attention."""
    ad = adapters.get(cait64)
    L, D = ad.num_layers, _depth(cait64)
    pairs = attention_relevance(ad, x64, TARGET)
    rel = {i: pair[0] for i, pair in pairs.items()}
    P = rel[0].shape[-1]
    cams = [(pairs[i][1] * rel[i]).clamp(min=0).mean(1) for i in range(L)]
    sa = [c + torch.eye(P, dtype=torch.float64) for c in cams[:D]]
    ca = [_e0(c[:, 0]) for c in cams[D:]]
    got = cv.TransformerLRP(cait64).attribute(x64, target=TARGET, output="tokens")
    assert _rel(got.flatten(1), _compose(sa, ca, P)) < 1e-10
    assert all(r.abs().sum() > 0 for r in rel.values())


def test_attention_flow(cait64, x64, dense):
    A, _ = dense
    D, P = _depth(cait64), A[0].shape[-1]
    mats = []
    for a in A[:D]:
        f = a[:1].mean(1)[0] + torch.eye(P, dtype=torch.float64)
        mats.append((f / f.sum(-1, keepdim=True)).clamp(min=0).numpy())
    for a in A[D:]:
        r = _e0(a[:1].mean(1)[:, 0])
        mats.append(
            naive_cait.dense_class_layer(r / r.sum(-1, keepdim=True))[0].numpy()
        )
    w = np.zeros(P + 1)
    w[0] = 1.0
    stages = [0] * D + [1] * (len(A) - D)
    flows = _networkx_flows(mats, [naive_cait.merge(P)], stages, w)
    expected = torch.from_numpy(flows / flows.sum())
    got = cv.AttentionFlow(cait64, rtol=1e-12).attribute(x64[:1], output="tokens")
    assert _rel(got.flatten(1)[0], expected) < 1e-10


# ----------------------------------------------------------------- LRP
def test_lrp_conserves_through_talking_heads_and_layer_scale(cait64, x64):
    """Chefer et al.'s rules conserve through talking heads (linear maps
    across heads) and layer scale: the relevance of the pixels, of the learnt
    class token (it joins after the first phase) and of the positional
    embedding sums to one per image."""
    ad = adapters.get(cait64)
    for i in range(x64.shape[0]):
        with torch.enable_grad(), lrp_context(ad, RuleSet()) as tracer:
            x = x64[i : i + 1].detach().requires_grad_(True)
            logits = ad.forward(x)
            start = torch.zeros_like(logits)
            start[0, int(TARGET[i])] = 1.0
            rx, rc, rp = torch.autograd.grad(
                logits, [x, cait64.cls_token, cait64.pos_embed], start
            )
        del tracer
        total = rx.sum() + rc.sum() + rp.sum()
        assert abs(total.item() - 1.0) < 1e-4  # the rules' 1e-9 stabiliser
        assert rx.abs().sum() > 1e-3  # the pixels get a share
    rel = cv.LRP(cait64).attribute(x64, target=TARGET)
    assert rel.shape == x64.shape and torch.isfinite(rel).all()
    attn = cv.AttnLRP(cait64).attribute(x64, target=TARGET)
    assert attn.shape == x64.shape and attn.abs().sum() > 0


@pytest.mark.parametrize("rules,original", [("original", True), ("chefer2021", False)])
def test_partial_lrp_reads_the_last_class_attention_row(cait64, x64, rules, original):
    """The last class-attention layer's relevance, from Chefer et al.'s rules
    written naively (tests/naive_cait.py), positive part, head mean, the
    class row at the patch columns."""
    R = naive_cait.last_class_attention_relevance(cait64, x64, HEADS, TARGET, original)
    assert (R < 0).any() and (R > 0).any()  # the positive part acts
    expected = R.clamp(min=0).mean(1)[:, 0, 1:]
    got = cv.PartialLRP(cait64, rules=rules).attribute(
        x64, target=TARGET, output="tokens"
    )
    assert got.shape == (3, 4, 4)
    assert _rel(got.flatten(1), expected) < 1e-10


def test_partial_lrp_of_a_self_attention_layer_is_the_mean_query_row(cait64, x64):
    """A self-attention layer has no class-token row: the mean over its
    patch rows of the relevance at the talking-heads attention (the token
    graph's row, as RawAttention reads the layer)."""
    rel = attention_relevance(adapters.get(cait64), x64, TARGET)
    for layer in range(_depth(cait64)):
        expected = rel[layer][0].clamp(min=0).mean(1).mean(1)
        method = cv.PartialLRP(cait64, rules="chefer2021", layer=layer)
        got = method.attribute(x64, target=TARGET, output="tokens")
        assert _rel(got.flatten(1), expected) < 1e-10, layer


@pytest.mark.parametrize("spatial", [True, False])
def test_grad_eclip_reads_the_last_class_query(cait64, x64, spatial):
    """Grad-ECLIP's formula on the last class-attention layer, from the naive
    forward: the gradient at the class query's output per head, the cosine
    of the class query with each patch key (min-max over the patch keys),
    the patch values; one head at a time."""
    x = x64.clone().requires_grad_(True)
    logits, _, kepts, _ = naive_cait.forward_kept(cait64, x, HEADS)
    kept = kepts[-1]
    (g,) = torch.autograd.grad(logits.gather(1, TARGET[:, None]).sum(), kept["o"])
    B, _, D = g.shape
    d = D // HEADS
    expected = torch.zeros(B, 16, dtype=torch.float64)
    for h in range(HEADS):
        gh = g[:, 0, h * d : (h + 1) * d]  # (B, d)
        q, k, v = (kept[n].detach()[:, h] for n in "qkv")
        k, v = k[:, 1:], v[:, 1:]  # the patch keys and values
        lam = torch.ones(B, 16, dtype=torch.float64)
        if spatial:
            cos = torch.nn.functional.cosine_similarity(q, k, dim=-1)  # (B, P)
            low, high = cos.amin(1, keepdim=True), cos.amax(1, keepdim=True)
            lam = (cos - low) / (high - low)
        expected += lam * torch.einsum("bc,bjc->bj", gh, v)
    expected = expected.clamp(min=0)
    assert (expected == 0).any() and (expected > 0).any()  # the ReLU acts
    method = cv.GradECLIP(cait64, spatial=spatial)
    got = method.attribute(x64, target=TARGET, output="tokens")
    assert got.shape == (3, 4, 4)
    assert _rel(got.flatten(1), expected) < 1e-10


def test_grad_eclip_refuses_a_self_attention_layer(cait64, x64):
    with pytest.raises(ValueError, match="none of its queries is the class token"):
        cv.GradECLIP(cait64, layer=0).attribute(x64, target=TARGET)


# ------------------------------------- methods on the patch tokens, copies
def _hooked(model, module, x, target, pre=False):
    """``module``'s output (its input with ``pre``) in the stock model's
    forward of ``x`` and the gradient of the summed target logits with
    respect to it (autograd.grad: no ``.grad`` is written)."""
    store = {}

    def keep(mod, args, out=None):
        store["t"] = args[0] if pre else out

    if pre:
        handle = module.register_forward_pre_hook(keep)
    else:
        handle = module.register_forward_hook(keep)
    try:
        logits = model(x.detach().clone().requires_grad_(True))
    finally:
        handle.remove()
    score = logits.gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(score, store["t"])
    return store["t"].detach(), grad


def _grad_cam(act, grad):
    return torch.relu((grad.mean(1, keepdim=True) * act).sum(-1))


def test_vit_gradcam_reads_the_patches_the_class_attention_reads(cait64, x64):
    """Grad-CAM on the last self-attention block's output: the patch tokens
    of every class-attention block, input and output (they pass unchanged);
    a self-attention block's input as on a ViT."""
    D = _depth(cait64)
    expected = _grad_cam(*_hooked(cait64, cait64.blocks[-1], x64, TARGET))
    assert (expected > 0).any() and (expected == 0).any()  # the ReLU acts
    for kwargs in (
        {},
        {"layer": D, "attribute_to_layer_input": False},
        {"layer": D - 1, "attribute_to_layer_input": False},
    ):
        cam = cv.ViTGradCam(cait64, **kwargs)
        got = cam.attribute(x64, target=TARGET, output="tokens")
        assert _rel(got.flatten(1), expected) < 1e-10, kwargs
    first = _grad_cam(*_hooked(cait64, cait64.blocks[0], x64, TARGET, pre=True))
    got = cv.ViTGradCam(cait64, layer=0).attribute(x64, target=TARGET, output="tokens")
    assert _rel(got.flatten(1), first) < 1e-10


def _ce(logits, t):
    return -logits.log_softmax(-1)[0, t]


@pytest.mark.parametrize("kappa", [None, 0.2])
def test_atman_suppresses_the_patch_in_both_phases(cait64, x64, kappa):
    """Patch ``i``'s column of the scores entering every softmax (after the
    talking heads' ``proj_l``; the class attention's patch columns) is
    multiplied by ``1 - f sim``: the naive forward with that multiplier, the
    cross-entropy difference per patch."""
    f = 0.9
    with torch.no_grad():
        emb = cait64.patch_embed(x64) + cait64.pos_embed  # the first block's input
    B, P, _ = emb.shape
    eye = torch.eye(P, dtype=torch.float64)
    sim = eye.expand(B, P, P)
    if kappa is not None:
        e = torch.nn.functional.normalize(emb, dim=-1)
        sim = e @ e.transpose(1, 2)
        sim = torch.maximum(torch.where(sim >= kappa, sim, 0 * sim) * (1 - eye), eye)
    expected = torch.empty(B, P, dtype=torch.float64)
    ce_max = torch.tensor(0.0, dtype=torch.float64)
    with torch.no_grad():
        for b in range(B):
            t, img = int(TARGET[b]), x64[b : b + 1]
            ce0 = _ce(naive_cait.forward(cait64, img, HEADS)[0], t)
            ce_max = max(ce_max, abs(ce0))
            for i in range(P):
                mult = (1 - f * sim[b, i])[None]
                logits = naive_cait.forward(cait64, img, HEADS, mult)[0]
                expected[b, i] = _ce(logits, t) - ce0
    atman = cv.ATMAN(cait64, conceptual_suppression_threshold=kappa)
    got = atman.attribute(x64, target=TARGET, output="tokens").flatten(1)
    # the method keeps the cross-entropies (and the similarities) in float32:
    # each difference is exact to a few float32 ulps of the cross-entropies
    ulp = torch.finfo(torch.float32).eps * float(ce_max)
    assert (got - expected).abs().max() < 4 * ulp
    assert expected.abs().max() > 1e4 * ulp  # well above that rounding
    if kappa is not None:
        assert (sim > 0).sum(-1).float().mean() > 2  # groups suppressed


def test_vit_cx_masks_from_the_last_self_attention_output():
    """ViT-CX's default target, the last block's ``norm1``, is the
    class-attention block's: its patch rows are the last self-attention
    output, normed; the rest is the naive per-image loop of test_vit_cx."""
    from tests.attr.test_vit_cx import naive_vit_cx

    model = timm_cait()
    x = images(2)
    target = torch.tensor([1, 4])
    norm = model.blocks_token_only[-1].norm1
    expected, K = naive_vit_cx(model, x, target, norm=norm)
    method = cv.ViTCX(model, internal_batch_size=7)
    got = method.attribute(x, target=target)
    assert_close_to_scale(got[:, 0], expected, 1e-3)
    assert 1 < K < model.embed_dim  # the clustering merged some masks


def _subset_forward(model, x, index):
    """The stock CaiT's modules on the patches ``index`` alone (the others
    dropped from the first block's input)."""
    t = (model.patch_embed(x) + model.pos_embed)[:, index]
    t = model.blocks(t)
    return model.head(model.norm(model.forward_cls(t))[:, 0])


def test_tis_drops_patches_before_the_self_attention():
    model = timm_cait().double()
    x = images(2).double()
    tis = cv.TIS(model, n_masks=12, tokens_ratio=[0.25, 0.5], internal_batch_size=5)
    P = 16
    expected = torch.zeros(2, P, dtype=torch.float64)
    for b in range(2):
        acts = [
            _hooked(model, blk, x[b : b + 1], TARGET[b : b + 1])[0]
            for blk in model.blocks
        ]
        z = tis.activations(x[b : b + 1])[1]
        assert torch.equal(z, torch.cat(acts, dim=-1)[0])  # the self-attention blocks
        total = torch.zeros(P, dtype=torch.float64)
        cover = torch.zeros(P, dtype=torch.float64)
        with torch.no_grad():
            for index in tis.masks(z):
                for row in index.tolist():
                    logits = _subset_forward(model, x[b : b + 1], row)
                    total[row] += logits.softmax(-1)[0, TARGET[b]]
                    cover[row] += 1
        expected[b] = torch.where(cover > 0, total / cover.clamp_min(1), 0 * total)
    got = tis.attribute(x, target=TARGET[:2], output="tokens").flatten(1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert expected.std(1).min() > 0


def _mosaic(P, g):
    """3x3 Gaussian weights of each patch's neighbourhood ``(P, P)``, by hand."""
    kernel = {0: 4, 1: 2, 2: 1}
    m = torch.zeros(P, P, dtype=torch.float64)
    for k in range(P):
        for j in range(P):
            dy, dx = abs(j // g - k // g), abs(j % g - k % g)
            if dy <= 1 and dx <= 1:
                m[k, j] = kernel[dy + dx] / 16
    return m


def test_vit_reciprocam_masks_the_class_attention_keys_or_a_block():
    """The default masks the normed ``[class; patches]`` the last
    class-attention block reads (class token kept); a self-attention block
    masks its input on the residual stream and after ``norm1``; both against
    the stock modules run by hand, one copy at a time."""
    model = timm_cait().double()
    x = images(2).double()
    D, P = _depth(model), 16
    masks = _mosaic(P, 4)
    blk_ca, blk_sa = model.blocks_token_only[-1], model.blocks[-1]
    expected = {"ca": torch.empty(2, P, dtype=torch.float64), "sa": None}
    expected["sa"] = torch.empty_like(expected["ca"])
    with torch.no_grad():
        for b in range(2):
            img, t = x[b : b + 1], int(TARGET[b])
            for k in range(P):
                m = torch.cat([torch.ones(1), masks[k]])[None, :, None]
                hook = blk_ca.attn.register_forward_pre_hook(
                    lambda mod, args, m=m: (m * args[0],)
                )
                try:
                    expected["ca"][b, k] = model(img)[0, t]
                finally:
                    hook.remove()
                tokens = model.patch_embed(img) + model.pos_embed
                for blk in model.blocks[: D - 1]:
                    tokens = blk(tokens)
                mk = masks[k][None, :, None]
                u = mk * tokens + blk_sa.gamma_1 * blk_sa.attn(
                    mk * blk_sa.norm1(tokens)
                )
                y = u + blk_sa.gamma_2 * blk_sa.mlp(blk_sa.norm2(u))
                out = model.norm(model.forward_cls(y))[:, 0]
                expected["sa"][b, k] = model.head(out)[0, t]
    for key, layer in (("ca", -1), ("sa", D - 1)):
        cam = cv.ViTReciproCAM(model, layer=layer, internal_batch_size=5)
        got = cam.attribute(x, target=TARGET[:2], output="tokens").flatten(1)
        assert _rel(got, expected[key]) < 1e-10, key
        assert expected[key].std(1).min() > 0
    two = timm_cait(depth_token_only=2)
    with pytest.raises(ValueError, match="not the last"):
        cv.ViTReciproCAM(two, layer=D).attribute(images(1), target=0)


# --------------------------------------------------------------- refusals
ON_CAIT = {
    "raw_attention",
    "rollout",
    "attention_flow",
    "grad_sam",
    "generic_attention",
    "transformer_lrp",
    "lrp",
    "attn_lrp",
    "vit_gradcam",
    "vit_cx",
    "atman",
    "tis",
    "vit_reciprocam",
    "partial_lrp",
    "grad_eclip",
}


def test_methods_that_do_not_apply_refuse_with_their_reason():
    """Each refusal says why that method's definition does not carry over,
    none the generic text."""
    model = timm_cait()
    on_cait = set(cv.attr.list_methods(model=model))
    assert on_cait == ON_CAIT
    reasons = set()
    for name in set(cv.attr.list_methods()) - on_cait:
        with pytest.raises(UnsupportedModelError) as err:
            cv.attr.create_method(name, model)
        reason = str(err.value).split(": ", 1)[1]
        assert (
            "joins only after the self-attention layers and is the only" not in reason
        )
        assert "CaiT" in reason, name
        reasons.add(reason)
    assert len(reasons) == len(set(cv.attr.list_methods()) - on_cait)  # all own
    for name in on_cait:
        cv.attr.create_method(name, model)  # none refuses


def test_vit_shapley_refusal_is_what_talking_heads_do(cait64, x64):
    """ViT Shapley's reason: a -inf on a key's scores entering the softmax
    (after ``proj_l``) leaves that key a weight of ``b_w`` in the attention
    that multiplies ``V`` (after ``proj_w``), in every head and row."""
    with pytest.raises(UnsupportedModelError, match="talking heads") as err:
        cv.ShapleyExplainer(cait64)
    assert "b_w" in str(err.value)
    attn = cait64.blocks[0].attn
    recorded = {}
    # timm's TalkingHeadAttn mixes heads on (B, queries, keys, heads)
    hook = attn.proj_l.register_forward_hook(
        lambda mod, args, out: out.masked_fill(
            (torch.arange(out.shape[2]) == 3)[:, None], float("-inf")
        )
    )
    hook_w = attn.proj_w.register_forward_hook(
        lambda mod, args, out: recorded.setdefault("A", out)
    )
    try:
        with torch.no_grad():
            cait64(x64)
    finally:
        hook.remove()
        hook_w.remove()
    A = recorded["A"]
    assert torch.isfinite(A).all()
    held_out = A[:, :, 3]  # (B, P, heads): key 3 of every query row
    bias = attn.proj_w.bias.detach()
    torch.testing.assert_close(held_out, bias.expand_as(held_out))
    assert bias.abs().min() > 1e-3


def test_unsupported_pooling_says_why():
    with pytest.raises(UnsupportedModelError, match="never change"):
        adapters.get(timm_cait(global_pool="avg"))
