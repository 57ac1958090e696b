"""The LRP rules of EVA's operations (issue 15): the rotary position
embedding, SwiGLU's gated product, the norms inside the attention and
``norm_pre``.

Each new rule against its equation written out (float64): the rotary
embedding as an explicit per-position rotation matrix, the gate's halving,
a whole SwiGLU MLP against a hand-written chain of rules; then every LRP
method on tiny timm ``Eva`` layouts (batched, model left as it was) and
conservation in float64, as the existing LRP tests state it (Chefer et al.'s
rules: the relevance of the inputs sums to one; AttnLRP: inputs plus what the
softmax absorbs sum to the target logit).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import captum_vit as cv
from captum_vit import adapters
from captum_vit.attr import _lrp_rules as rules
from captum_vit.attr._lrp import AttnLRPRules, RuleSet, lrp_context
from tests.attr.test_contract import assert_same_state, snapshot
from tests.models import EVA02, images, randomize_, timm_eva, timm_vit

G = torch.Generator().manual_seed(0)
EPS9 = 1e-9
LRP_METHODS = (cv.LRP, cv.PartialLRP, cv.TransformerLRP, cv.AttnLRP)


def rnd(*shape):
    return torch.randn(*shape, generator=G, dtype=torch.float64)


def _rope(n, d):
    """A timm rotary embedding (sin, cos concatenated) for an ``n``-position
    grid and head dimension ``d``, as EVA-02 builds it."""
    from timm.layers import RotaryEmbeddingCat

    side = int(n**0.5)
    emb = RotaryEmbeddingCat(d, in_pixels=False, feat_shape=[side, side])
    return emb.get_embed().double()


def _rotation(rope, half=False):
    """The rotary embedding's rotation as explicit matrices ``W[p]`` (d, d)
    per position, read off its action on the basis vectors."""
    from timm.layers import apply_rot_embed_cat

    n, d = rope.shape[0], rope.shape[1] // 2
    eye = torch.eye(d, dtype=torch.float64)
    cols = apply_rot_embed_cat(eye[:, None, :].expand(d, n, d), rope, half=half)
    return cols.permute(1, 2, 0)  # W[p, :, i] = rotation of e_i at p


def _z_rule(x, W, R):
    """z-rule through ``y = W x`` per position as a contribution matrix:
    ``R_i = sum_j W_ji x_i / y_j * R_j`` (y_j = sum_i W_ji x_i)."""
    z = W.transpose(-2, -1) * x[..., :, None]  # z[..., i, j] = W_ji x_i
    den = z.sum(-2)
    return (z * torch.where(den == 0, 0.0, R / (den + EPS9))[..., None, :]).sum(-1)


# ------------------------------------------------------------ rotary
@pytest.mark.parametrize("half", [False, True])
def test_rotary_rule_is_the_z_rule_of_its_rotation(half):
    """Chefer et al.'s rule sets: the relevance through the rotation is the
    z-rule of the explicit linear map ``W_p`` (as for the pooling); the
    gradient pass gets ``W_p^T g``; the relevance is conserved."""
    from timm.layers import apply_rot_embed_cat

    rope = _rope(16, 8)
    W = _rotation(rope, half)
    x, R = rnd(2, 3, 16, 8), rnd(2, 3, 16, 8)

    def fn(t):
        return apply_rot_embed_cat(t, rope, half=half)

    torch.testing.assert_close(fn(x), (W @ x[..., None])[..., 0])
    xr = x.clone().requires_grad_(True)
    (Rx,) = torch.autograd.grad(rules.FixedLinearZ.apply(xr, fn, None), xr, R)
    torch.testing.assert_close(Rx, _z_rule(x, W, R), rtol=1e-10, atol=1e-12)
    # conserved but for the stabiliser: sum_j R_j (1 - y_j / (y_j + 1e-9))
    y = fn(x)
    bound = (R.abs() * EPS9 / (y.abs() - EPS9)).sum().item()
    assert abs((Rx.sum() - R.sum()).item()) <= 1.01 * bound + 1e-12
    mode = rules.Mode(gradients=True)
    out = rules.FixedLinearZ.apply(xr, fn, mode)
    with mode.gradient():
        (g,) = torch.autograd.grad(out, xr, R)
    torch.testing.assert_close(g, (W.transpose(-2, -1) @ R[..., None])[..., 0])


@pytest.mark.parametrize("epsilon", [0.0, 1e-2])
def test_attn_lrp_rotary_equals_an_explicit_linear_layer(epsilon):
    """AttnLRP: relevance through the rotation (gradient x input) equals the
    relevance through ``nn.Linear`` layers with the weight ``W_p`` and no
    bias under the same rule set (LRP-epsilon; at epsilon = 0 the plain
    gradient, so the rotation needs no rule of its own there)."""
    from timm.layers import apply_rot_embed_cat

    rope = _rope(4, 8)
    W = _rotation(rope)
    rs = AttnLRPRules(epsilon)
    x, R = rnd(2, 4, 8), rnd(2, 4, 8)

    def gxi(out_fn):
        xr = x.clone().requires_grad_(True)
        out = out_fn(xr)
        (g,) = torch.autograd.grad(out, xr, torch.where(out == 0, 0.0, R / out))
        return x * g

    def rotated(t):
        return rs.fixed_linear(t, lambda u: apply_rot_embed_cat(u, rope), None)

    def linears(t):
        outs = []
        for p in range(4):
            lin = torch.nn.Linear(8, 8, bias=False).double()
            lin.weight.data.copy_(W[p])
            outs.append(rs.linear(lin, t[:, p], None))
        return torch.stack(outs, 1)

    got, expected = gxi(rotated), gxi(linears)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # and the written-out LRP-epsilon: R_x = x * W^T (R / stab(y))
    y = (W @ x[..., None])[..., 0]
    naive = (
        x * (W.transpose(-2, -1) @ (R / rules.stabilize(y, epsilon))[..., None])[..., 0]
    )
    torch.testing.assert_close(got, naive, rtol=1e-10, atol=1e-12)


# -------------------------------------------------------------- gate
def test_product_rules_halve_the_relevance():
    """The gated product ``a * b``: Chefer et al.'s halved z-rule and
    AttnLRP's uniform rule both give each factor half the relevance (0 where
    the product is 0 for the z-rule); the gradient pass gets ``(R b, R a)``."""
    a, b, R = rnd(3, 7), rnd(3, 7), rnd(3, 7)
    a[0, 0] = 0.0
    ar, br = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    Ra, Rb = torch.autograd.grad(rules.ProductHalf.apply(ar, br, None), (ar, br), R)
    y = a * b
    half = torch.where(y == 0, 0.0, y * R / (y + EPS9)) / 2
    torch.testing.assert_close(Ra, half, rtol=1e-12, atol=0)
    torch.testing.assert_close(Rb, half, rtol=1e-12, atol=0)
    mode = rules.Mode(gradients=True)
    out = rules.ProductHalf.apply(ar, br, mode)
    with mode.gradient():
        ga, gb = torch.autograd.grad(out, (ar, br), R)
    torch.testing.assert_close((ga, gb), (R * b, R * a))
    # AttnLRP: R_t = t * g_t with g at the product R / y
    out = AttnLRPRules().product(ar, br, None)
    ga, gb = torch.autograd.grad(out, (ar, br), torch.where(y == 0, 0.0, R / y))
    torch.testing.assert_close(a * ga, torch.where(y == 0, 0.0, R / 2))
    torch.testing.assert_close(b * gb, torch.where(y == 0, 0.0, R / 2))


def _alpha1beta0(x, W, R):
    """Chefer et al.'s LRP-alpha1beta0 of ``x W^T`` (bias ignored), written
    out: ``z_ij = x_i^+ W_ji^+ + x_i^- W_ji^-``."""
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    z = xp[..., :, None] * W.T.clamp(min=0) + xn[..., :, None] * W.T.clamp(max=0)
    den = z.sum(-2)
    return (z * torch.where(den == 0, 0.0, R / (den + EPS9))[..., None, :]).sum(-1)


def _ln_const_std(h, ln, R_out, y):
    """AttnLRP's LayerNorm rule written out: LRP-0 through the linear map
    ``gamma (h - mean) / sigma`` (sigma held): ``R_h = h * J^T (R / y)``."""
    sigma = (h.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()
    d = h.shape[-1]
    J = (torch.eye(d, dtype=h.dtype) - 1.0 / d) * ln.weight.detach()[:, None]
    s = torch.where(y == 0, 0.0, R_out / y) / sigma
    return h * (s @ J)


@pytest.mark.parametrize("rule_set", ["chefer2021", "attnlrp"])
def test_swiglu_mlp_against_its_hand_written_rules(rule_set):
    """A whole SwiGLU MLP with EVA-02's norm inside (``scale_mlp``): the
    relevance of its input from the engine's rules equals the chain written
    by hand: output linear, the norm, the product halved (R_gate = R_value =
    R_h / 2), the SiLU's identity rule, and each input linear."""
    from timm.layers import SwiGLU

    from captum_vit.adapters._parts import gated_mlp_forwards
    from captum_vit.attr._lrp import LRPTracer, get_rule_set

    torch.manual_seed(0)
    mlp = SwiGLU(6, 10, norm_layer=torch.nn.LayerNorm).double().eval()
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(rnd(*p.shape) * 0.5 + (1.0 if p.dim() == 1 else 0.0) * 0.3)
    rs = get_rule_set(rule_set)
    tracer = LRPTracer(rs)
    host = torch.nn.Module()
    host.mlp = mlp
    ((_, _, forward),) = gated_mlp_forwards([host], tracer)
    x, R = rnd(4, 6), rnd(4, 6)
    with adapters.patching(mlp) as patch:
        for m, kind in (
            (mlp.fc1_g, "linear"),
            (mlp.fc1_x, "linear"),
            (mlp.fc2, "linear"),
            (mlp.norm, "norm"),
            (mlp.act, "elementwise"),
        ):
            patch.set(m, "forward", lambda t, m=m, k=kind: getattr(rs, k)(m, t, None))
        xr = x.clone().requires_grad_(True)
        out = forward(xr)
        torch.testing.assert_close(out, SwiGLU.forward(mlp, x))
        grad_out = R if not rs.gradient_times_input else R / out
        (g,) = torch.autograd.grad(out, xr, grad_out.detach())
    got = g if not rs.gradient_times_input else x * g

    # the forward, by hand
    Wg, bg = mlp.fc1_g.weight.detach(), mlp.fc1_g.bias.detach()
    Wx, bx = mlp.fc1_x.weight.detach(), mlp.fc1_x.bias.detach()
    W2 = mlp.fc2.weight.detach()
    gate_in, value = x @ Wg.T + bg, x @ Wx.T + bx
    gate = F.silu(gate_in)
    h = gate * value
    n = F.layer_norm(h, (10,), mlp.norm.weight, mlp.norm.bias, mlp.norm.eps).detach()
    if rule_set == "chefer2021":
        Rn = _alpha1beta0(n, W2, R)
        Rh = Rn  # LayerNorm: identity rule
        Rg = Rv = torch.where(h == 0, 0.0, h * Rh / (h + EPS9)) / 2
        Rgate_in = Rg  # SiLU: identity rule
        expected = _alpha1beta0(x, Wg, Rgate_in) + _alpha1beta0(x, Wx, Rv)
    else:  # LRP-0 with biases absorbing their share (epsilon = 0)
        Rn = n * ((R / out.detach()) @ W2)
        Rh = _ln_const_std(h, mlp.norm, Rn, n)
        Rg = Rv = Rh / 2
        expected = x * ((Rg / gate_in) @ Wg) + x * ((Rv / value) @ Wx)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------ models
LAYOUTS = {
    "eva02": lambda: timm_eva(**EVA02),
    "eva02_no_class_token_unfused_qkv": lambda: timm_eva(
        class_token=False, qkv_fused=False, **EVA02
    ),
    "eva02_token_pool_registers": lambda: timm_eva(
        global_pool="token", num_reg_tokens=2, **EVA02
    ),
    "eva_packed_swiglu_rope_half": lambda: timm_eva(
        use_rot_pos_emb=True, swiglu_mlp=True, rope_rotate_half=True
    ),
    "eva_qk_norm_inner_norm_pre_norm": lambda: timm_eva(
        use_rot_pos_emb=True,
        swiglu_mlp=True,
        scale_mlp=True,
        qk_norm=True,
        scale_attn_inner=True,
        use_pre_transformer_norm=True,
    ),
    # timm's VisionTransformer with the same operations (issue 15's other
    # refusals): packed SwiGLU, qk norm, a norm before the first block
    "vit_swiglu_packed_qk_norm_pre_norm": lambda: _vit_swiglu_packed(),
}


def _vit_swiglu_packed():
    from timm.layers import SwiGLUPacked

    return randomize_(
        timm_vit(mlp_layer=SwiGLUPacked, qk_norm=True, pre_norm=True, mlp_ratio=2)
    )


@pytest.fixture(scope="module", params=list(LAYOUTS))
def eva(request):
    return request.param, LAYOUTS[request.param]()


def test_no_gap_remains(eva):
    _, model = eva
    assert adapters.get(model).relevance_gaps() == []


@pytest.mark.parametrize("method", LRP_METHODS, ids=lambda m: m.__name__)
def test_every_lrp_method_runs_batched(eva, method):
    """Finite maps of the right shape, batch-independent, the model left
    exactly as it was."""
    _, model = eva
    x = images(3)
    target = torch.tensor([0, 3, 1])
    before = snapshot(model)
    explainer = method(model)
    pixels = explainer.attribute(x, target=target)
    assert pixels.shape == x.shape and torch.isfinite(pixels).all()
    assert pixels.abs().sum() > 0
    tokens = explainer.attribute(x, target=target, output="tokens")
    assert tokens.shape == (3, 4, 4) and torch.isfinite(tokens).all()
    single = explainer.attribute(x[1:2], target=3, output="tokens")
    torch.testing.assert_close(single[0], tokens[1], rtol=1e-4, atol=1e-6)
    assert_same_state(before, snapshot(model))


def _prefix_params(model):
    return [
        p
        for p in (model.cls_token, model.reg_token, model.pos_embed)
        if isinstance(p, torch.nn.Parameter)
    ]


@pytest.mark.parametrize("stabiliser,tol", [(1e-9, 1e-5), (1e-14, 1e-9)])
def test_chefer_rules_conserve(eva, stabiliser, tol, monkeypatch):
    """Chefer et al.'s rules (``TransformerLRP``'s and ``LRP``'s set, relevance
    starting at one on the target logit) conserve through the rotary
    embedding, the gate and the inner norms: the relevance of the pixels,
    the class/register tokens and the positional embedding sums to one per
    image, in float64, up to the rules' stabiliser (measured: 1.7e-6 with
    their 1e-9, 2e-11 with 1e-14; a plain ViT: 5e-8)."""
    monkeypatch.setattr(rules, "SDIV_EPS", stabiliser)
    name, model = eva
    model = copy.deepcopy(model).double()
    ad = adapters.get(model)
    x64 = images(2).double()
    for i, target in enumerate((1, 3)):
        with torch.enable_grad(), lrp_context(ad, RuleSet()):
            x = x64[i : i + 1].detach().requires_grad_(True)
            logits = ad.forward(x)
            start = torch.zeros_like(logits)
            start[0, target] = 1.0
            grads = torch.autograd.grad(logits, [x] + _prefix_params(model), start)
        total = sum(g.sum() for g in grads).item()
        assert abs(total - 1.0) < tol, (name, total)
        assert grads[0].abs().sum() > 1e-3  # the pixels get a share


def test_attn_lrp_conserves_as_stated_in_the_paper(eva):
    """AttnLRP (epsilon 1e-12, float64, all biases zero): the relevance of the
    pixels, the class/register tokens and the positional embedding plus what
    the softmax rules absorb equals the target logit (Achtibat et al.,
    Sec. 3; the rotary embedding and the gate add no bias term)."""
    name, model = eva
    model = copy.deepcopy(model).double()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.zero_()
    ad = adapters.get(model)
    x64 = images(2).double()
    L = ad.num_layers
    for i, target in enumerate((1, 3)):
        with torch.enable_grad(), lrp_context(ad, AttnLRPRules(1e-12)) as tr:
            tr.keep_attention = tr.keep_scores = True
            x = x64[i : i + 1].detach().requires_grad_(True)
            logits = ad.forward(x)
            attn = [tr.attentions[j] for j in range(L)]
            scores = [tr.scores[j] for j in range(L)]
            start = torch.zeros_like(logits)
            start[0, target] = 1.0
            wrt = [x] + _prefix_params(model) + attn + scores
            g = torch.autograd.grad(logits, wrt, start)
        rel = [t.detach() * gt for t, gt in zip(wrt, g)]
        k = len(wrt) - 2 * L
        inputs = sum(r.sum() for r in rel[:k]).item()
        absorbed = sum(
            ra.sum() - rs.sum() for ra, rs in zip(rel[k : k + L], rel[k + L :])
        ).item()
        logit = logits[0, target].item()
        assert abs(inputs + absorbed - logit) < 1e-8 * abs(logit), (
            name,
            logit,
            inputs,
            absorbed,
        )
