"""Every LRP rule against a naive re-implementation of its equation.

In the style of zennit's ``@replicates``: each relevance rule is run through
``torch.autograd.grad(out, inputs, grad_outputs=R)``, each gradient x input
rule (AttnLRP) through ``x * torch.autograd.grad(out, inputs,
grad_outputs=R / out)``, and compared with the equation written as explicit
contribution matrices (float64, small shapes).
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from captum_vit.attr import _lrp_rules as rules

G = torch.Generator().manual_seed(0)
EPS9 = 1e-9
D64 = torch.float64


def rnd(*shape):
    return torch.randn(*shape, generator=G, dtype=torch.float64)


def relevance(fn, inputs, R):
    inputs = [t.clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    return torch.autograd.grad(out, inputs, grad_outputs=R)


def relevance_gxi(fn, inputs, R):
    """Relevance of a gradient x input rule: ``R_t = t * g_t``, started from
    the output relevance ``R`` (so ``g_out = R / out``, 0 where out = 0)."""
    inputs = [t.clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    g = torch.where(out == 0, 0.0, R / out)
    grads = torch.autograd.grad(out, inputs, grad_outputs=g)
    return [t.detach() * g for t, g in zip(inputs, grads)]


def naive_sdiv(a, b):
    out = torch.zeros_like(a)
    for idx in itertools.product(*(range(n) for n in a.shape)):
        if b[idx] != 0:
            d = b[idx] + EPS9
            out[idx] = a[idx] / (d if d != 0 else EPS9)
    return out


def redistribute(z, R, den):
    """R_i = sum_j z[i, j] / den[j] * R[j] for contribution matrix z (I, J)."""
    return (z * (R / den)[None, :]).sum(1)


REPLICATES = []


def replicates(fn):
    REPLICATES.append(fn)
    return fn


# ------------------------------------------------------------------- tests
def test_sdiv_matches_reference_semantics():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D64)
    b = torch.tensor([2.0, 0.0, -EPS9, -1.0], dtype=D64)
    out = rules.sdiv(a, b)
    assert out[0] == 1.0 / (2.0 + EPS9)
    assert out[1] == 0.0
    assert out[2] == 3.0 / EPS9  # b + 1e-9 == 0 -> denominator 1e-9
    assert out[3] == 4.0 / (-1.0 + EPS9)
    torch.testing.assert_close(out, naive_sdiv(a, b), rtol=0, atol=0)


@replicates
def test_linear_alpha1_beta0():
    x, W, b, R = rnd(6), rnd(4, 6), rnd(4), rnd(4)
    (Rx,) = relevance(lambda x: rules.LinearAlpha1Beta0.apply(x, W, b), [x], R)
    z = x.clamp(min=0)[:, None] * W.clamp(min=0).T + x.clamp(max=0)[:, None] * (
        W.clamp(max=0).T
    )  # z[i, j]: positive contributions of input i to output j, no bias
    den = z.sum(0) + EPS9
    torch.testing.assert_close(Rx, redistribute(z, R, den))
    # conserves: sum R_x = sum R up to the stabiliser
    torch.testing.assert_close(Rx.sum(), R.sum(), rtol=1e-6, atol=0)
    # exact zeros of x, and an output whose Z is exactly 0 (every positive
    # input meets a non-positive weight and vice versa): sdiv's 0 there
    x = torch.tensor([1.0, -1.0, 0.0, 2.0, 0.5, -0.3], dtype=D64)
    W[0] = torch.tensor([-1.0, 1.0, 5.0, -3.0, 0.0, 2.0], dtype=D64)
    (Rx,) = relevance(lambda x: rules.LinearAlpha1Beta0.apply(x, W, b), [x], R)
    z = x.clamp(min=0)[:, None] * W.clamp(min=0).T + x.clamp(max=0)[:, None] * (
        W.clamp(max=0).T
    )
    assert z[:, 0].abs().sum() == 0
    torch.testing.assert_close(Rx, redistribute(z, R, z.sum(0) + EPS9))
    assert Rx[2] == 0


@replicates
def test_linear_separate_normalisation():
    x, W, b, R = rnd(6), rnd(4, 6), rnd(4), rnd(4)
    (Rx,) = relevance(lambda x: rules.LinearSeparate.apply(x, W, b), [x], R)
    zp = x.clamp(min=0)[:, None] * W.clamp(min=0).T
    zn = x.clamp(max=0)[:, None] * W.clamp(max=0).T
    expected = redistribute(zp, R, zp.sum(0) + EPS9) + redistribute(
        zn, R, zn.sum(0) + EPS9
    )
    torch.testing.assert_close(Rx, expected)
    # each non-zero half receives the full relevance: no conservation
    halves = (zp.sum(0) > 0).double() + (zn.sum(0) > 0).double()
    torch.testing.assert_close(Rx.sum(), (halves * R).sum(), rtol=1e-6, atol=0)


@replicates
def test_linear_epsilon():
    x, W, b, R = rnd(6), rnd(4, 6), rnd(4), rnd(4)
    eps = 1e-3
    (Rx,) = relevance_gxi(lambda x: rules.Epsilon.apply(F.linear(x, W, b), eps), [x], R)
    z = x[:, None] * W.T
    y = z.sum(0) + b
    torch.testing.assert_close(Rx, redistribute(z, R, y + eps * torch.sign(y)))
    (Rx0,) = relevance_gxi(lambda x: F.linear(x, W), [x], R)  # epsilon = 0
    torch.testing.assert_close(Rx0, redistribute(z, R, z.sum(0)))
    torch.testing.assert_close(Rx0.sum(), R.sum())  # no bias: conserves


@replicates
def test_layer_norm_constant_std():
    D = 5
    x, w, b, R = rnd(D), rnd(D), rnd(D), rnd(D)
    eps = 1e-3

    def ln(x, b=b):
        return rules.ConstantStdLayerNorm.apply(x, w, b, 1e-6)

    (Rx,) = relevance_gxi(lambda x: rules.Epsilon.apply(ln(x), eps), [x], R)
    std = (x.var(unbiased=False) + 1e-6).sqrt()
    # y_j = w_j (x_j - mean x) / std + b_j, std constant: z[i, j] = w_j/std (d_ij - 1/D) x_i
    z = (torch.eye(D, dtype=D64) - 1.0 / D) * x[:, None] * (w / std)[None, :]
    y = z.sum(0) + b
    torch.testing.assert_close(Rx, redistribute(z, R, y + eps * torch.sign(y)))
    (Rx0,) = relevance_gxi(lambda x: ln(x, None), [x], R)  # epsilon = 0, no bias
    torch.testing.assert_close(Rx0.sum(), R.sum())
    # the forward is the LayerNorm itself
    torch.testing.assert_close(ln(x[None])[0], F.layer_norm(x, (D,), w, b, 1e-6))


@replicates
@pytest.mark.parametrize("negative_branch", [False, True])
def test_add_renormalised(negative_branch):
    B = 3
    a, b, R = rnd(B, 4, 2), rnd(B, 4, 2), rnd(B, 4, 2).abs()
    if negative_branch:  # README §8's blind spot: one branch total < 0
        b = -b.abs() * 0.3
        a = a.abs() + 0.5
    (Ra, Rb) = relevance(lambda a, b: rules.AddZ.apply(a, b, True), [a, b], R)
    for i in range(B):  # per sample
        S = naive_sdiv(R[i], a[i] + b[i])
        ra, rb, s = a[i] * S, b[i] * S, R[i].sum()
        sa, sb = ra.sum(), rb.sum()
        tot = sa.abs() + sb.abs()
        fa = naive_sdiv((naive_sdiv(sa.abs()[None], tot[None]) * s), sa[None])
        fb = naive_sdiv((naive_sdiv(sb.abs()[None], tot[None]) * s), sb[None])
        torch.testing.assert_close(Ra[i], ra * fa)
        torch.testing.assert_close(Rb[i], rb * fb)
        torch.testing.assert_close(Ra[i].sum() + Rb[i].sum(), s)  # conserves
    if negative_branch:
        assert (Rb.reshape(B, -1).sum(1) > 0).all()  # sign-flipped share


@replicates
def test_add_plain_and_broadcast():
    a, pos, R = rnd(2, 3, 4), rnd(1, 3, 4), rnd(2, 3, 4)
    (Ra, Rp) = relevance(lambda a, p: rules.AddZ.apply(a, p, False), [a, pos], R)
    S = naive_sdiv(R, a + pos)
    torch.testing.assert_close(Ra, a * S)
    torch.testing.assert_close(Rp, (pos * S).sum(0, keepdim=True))
    (Ra, Rp) = relevance_gxi(lambda a, p: rules.Epsilon.apply(a + p, 1e-3), [a, pos], R)
    y = a + pos
    torch.testing.assert_close(Ra, a * R / (y + 1e-3 * torch.sign(y)))
    torch.testing.assert_close(
        Rp, (pos * R / (y + 1e-3 * torch.sign(y))).sum(0, keepdim=True)
    )


@replicates
def test_clone_sums_relevance_of_all_uses():
    x = rnd(5)
    R1, R2 = rnd(5), rnd(5)
    xr = x.clone().requires_grad_(True)
    y = rules.ZIdentity.apply(xr)
    (Rx,) = torch.autograd.grad([y * 1.0, y + 0.0], [xr], grad_outputs=[R1, R2])
    torch.testing.assert_close(Rx, x * (naive_sdiv(R1, x) + naive_sdiv(R2, x)))


@replicates
def test_pooling_z_rule():
    x, R = rnd(2, 4, 3), rnd(2, 3)
    for w in (
        torch.tensor([1.0, 0, 0, 0], dtype=D64),
        torch.tensor([0, 1 / 3, 1 / 3, 1 / 3], dtype=D64),
    ):
        (Rx,) = relevance(lambda x, w=w: rules.PoolZ.apply(x, w), [x], R)
        p = torch.einsum("n,bnd->bd", w, x)
        expected = w[None, :, None] * x * naive_sdiv(R, p)[:, None, :]
        torch.testing.assert_close(Rx, expected)
        torch.testing.assert_close(Rx.sum(), R.sum(), rtol=1e-6, atol=0)


def naive_qk_half(q, k, R, sdiv=True):
    """The halved z-rule on the scores, one contribution at a time (with
    Chefer's ``sdiv`` or a plain division)."""
    H, N, d = q.shape
    Eq, Ek = torch.zeros_like(q), torch.zeros_like(k)
    for h in range(H):
        for i in range(N):
            for j in range(N):
                Z = sum(q[h, i, c] * k[h, j, c] for c in range(d))  # unscaled
                for c in range(d):
                    share = _share(R[h, i, j], Z, sdiv)
                    Eq[h, i, c] += q[h, i, c] * k[h, j, c] * share / 2
                    Ek[h, j, c] += q[h, i, c] * k[h, j, c] * share / 2
    return Eq, Ek


def _share(R, Z, sdiv):
    return naive_sdiv(R[None], Z[None])[0] if sdiv else R / Z


def naive_av_half(A, v, R, sdiv=True):
    """The halved z-rule on ``A v``, one contribution at a time."""
    H, N, d = v.shape
    EA, Ev = torch.zeros_like(A), torch.zeros_like(v)
    for h in range(H):
        for i in range(N):
            for c in range(d):
                Z = sum(A[h, i, j] * v[h, j, c] for j in range(N))
                share = _share(R[h, i, c], Z, sdiv)
                for j in range(N):
                    EA[h, i, j] += A[h, i, j] * v[h, j, c] * share / 2
                    Ev[h, j, c] += A[h, i, j] * v[h, j, c] * share / 2
    return EA, Ev


@replicates
def test_qk_halved_z_rule():
    H, N, d = 2, 3, 4
    q, k, R = rnd(H, N, d), rnd(H, N, d), rnd(H, N, N)
    scale = d**-0.5
    (Rq, Rk) = relevance(lambda q, k: rules.QKHalf.apply(q, k, scale), [q, k], R)
    Eq, Ek = naive_qk_half(q, k, R)
    torch.testing.assert_close(Rq, Eq)
    torch.testing.assert_close(Rk, Ek)
    torch.testing.assert_close(Rq.sum() + Rk.sum(), R.sum(), rtol=1e-6, atol=0)


@replicates
def test_av_halved_z_rule():
    H, N, d = 2, 3, 4
    A, v, R = rnd(H, N, N).softmax(-1), rnd(H, N, d), rnd(H, N, d)
    (RA, Rv) = relevance(lambda A, v: rules.AVHalf.apply(A, v), [A, v], R)
    EA, Ev = naive_av_half(A, v, R)
    torch.testing.assert_close(RA, EA)
    torch.testing.assert_close(Rv, Ev)


@replicates
def test_attention_core_in_one_function():
    """AttentionHalf = AVHalf, identity through the softmax, QKHalf; the
    consumer sees R_A, and in the gradient pass the gradient at A V."""
    B, H, N, d = 2, 2, 3, 4
    q, k, v, R = rnd(B, H, N, d), rnd(B, H, N, d), rnd(B, H, N, d), rnd(B, H, N, d)
    scale = d**-0.5

    class Consumer:
        def gradient(self, *, attention, output):
            self.grad = output

        def relevance(self, rel, v):
            self.rel = rel

    seen, mode = Consumer(), rules.Mode(gradients=True)

    def core(q, k, v):
        return rules.AttentionHalf.apply(q, k, v, scale, None, mode, seen)

    Rq, Rk, Rv = relevance(core, [q, k, v], R)
    A = (q @ k.mT * scale).softmax(-1)
    EA, Ev = zip(*[naive_av_half(A[b], v[b], R[b]) for b in range(B)])
    Eq, Ek = zip(*[naive_qk_half(q[b], k[b], EA[b]) for b in range(B)])
    for got, expected in ((seen.rel, EA), (Rv, Ev), (Rq, Eq), (Rk, Ek)):
        torch.testing.assert_close(got, torch.stack(expected))
    with mode.gradient():
        got = relevance(core, [q, k, v], R)
    expected = relevance(
        lambda q, k, v: (q @ k.mT * scale).softmax(-1) @ v, [q, k, v], R
    )
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e)
    torch.testing.assert_close(seen.grad, R)


@replicates
def test_uniform_rule_in_both_matmuls():
    """AttnLRP's uniform rule as gradient x input (UniformRule on each factor
    of a plain matmul) is the halved z-rule of both attention matmuls."""
    H, N, d = 2, 3, 4
    q, k, A, v = rnd(H, N, d), rnd(H, N, d), rnd(H, N, N).softmax(-1), rnd(H, N, d)
    Rs, Ro = rnd(H, N, N), rnd(H, N, d)
    half = rules.UniformRule.apply
    scale = d**-0.5
    Rq, Rk = relevance_gxi(
        lambda q, k: (half(q, 2.0) * scale) @ half(k, 2.0).mT, [q, k], Rs
    )
    Eq, Ek = naive_qk_half(q, k, Rs, sdiv=False)
    torch.testing.assert_close(Rq, Eq)
    torch.testing.assert_close(Rk, Ek)
    RA, Rv = relevance_gxi(lambda A, v: half(A, 2.0) @ half(v, 2.0), [A, v], Ro)
    EA, Ev = naive_av_half(A, v, Ro, sdiv=False)
    torch.testing.assert_close(RA, EA)
    torch.testing.assert_close(Rv, Ev)


@replicates
def test_identity_rule():
    """R_x = R_y for an elementwise function, also where x = 0."""
    x, R = rnd(3, 4), rnd(3, 4)
    x[0, 0] = R[0, 0] = 0.0  # gelu(0) = 0 carries no relevance
    (Rx,) = relevance_gxi(lambda x: rules.IdentityRule.apply(x, F.gelu), [x], R)
    torch.testing.assert_close(Rx, R)
    expected = R
    (Rx,) = relevance_gxi(lambda x: rules.IdentityRule.apply(x, torch.tanh), [x], R)
    torch.testing.assert_close(Rx, expected)


@replicates
def test_av_constant_attention():
    H, N, d = 2, 3, 4
    A, v, R = rnd(H, N, N).softmax(-1), rnd(H, N, d), rnd(H, N, d)
    (Rv,) = relevance_gxi(lambda v: rules.Epsilon.apply(A @ v, 1e-3), [v], R)
    Ev = torch.zeros_like(v)
    for h in range(H):
        for i in range(N):
            for c in range(d):
                Z = sum(A[h, i, j] * v[h, j, c] for j in range(N))
                den = Z + 1e-3 * (1.0 if Z >= 0 else -1.0)
                for j in range(N):
                    Ev[h, j, c] += A[h, i, j] * v[h, j, c] * R[h, i, c] / den
    torch.testing.assert_close(Rv, Ev)


@replicates
def test_softmax_attnlrp_is_taylor_at_input():
    x, R = rnd(2, 5), rnd(2, 5)
    (Rx,) = relevance_gxi(lambda x: x.softmax(-1), [x], R)  # the plain gradient
    s = x.softmax(-1)
    # naive: R_i = sum_j x_i * ds_j/dx_i * R_j / s_j (Jacobian written out)
    J = torch.zeros(2, 5, 5, dtype=D64)
    for b in range(2):
        for i in range(5):
            for j in range(5):
                J[b, i, j] = s[b, j] * (float(i == j) - s[b, i])
    expected = x * torch.einsum("bij,bj->bi", J, R / s)
    torch.testing.assert_close(Rx, expected)
    torch.testing.assert_close(Rx, x * (R - s * R.sum(-1, keepdim=True)))


@replicates
def test_pass_through():
    x, R = rnd(3, 4), rnd(3, 4)
    (Rx,) = relevance(lambda x: rules.PassThrough.apply(x, F.gelu), [x], R)
    torch.testing.assert_close(Rx, R, rtol=0, atol=0)
    softmax = lambda t: t.softmax(-1)  # noqa: E731
    (Rx,) = relevance(lambda x: rules.PassThrough.apply(x, softmax), [x], R)
    torch.testing.assert_close(Rx, R, rtol=0, atol=0)


def _patches(x, p):
    B, C, H, W = x.shape
    return x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)


@replicates
def test_conv_zbeta():
    B, C, p, D = 2, 3, 2, 4
    x, W, R = rnd(B, C, 4, 4), rnd(D, C, p, p), rnd(B, D, 2, 2)
    kw = dict(stride=(p, p), padding=(0, 0), dilation=(1, 1), groups=1)
    Rx = relevance(lambda x: rules.ConvZBeta.apply(x, W, None, kw), [x], R)[0]
    P = _patches(x, p)  # (B, gh, gw, C, p, p)
    expected = torch.zeros_like(P)
    Wp, Wn = W.clamp(min=0), W.clamp(max=0)
    for b in range(B):
        lo, hi = x[b].min(), x[b].max()
        for r in range(2):
            for c in range(2):
                patch = P[b, r, c]
                z = patch[None] * W - lo * Wp - hi * Wn  # (D, C, p, p)
                Z = z.reshape(D, -1).sum(1) + 1e-9
                expected[b, r, c] = (z * (R[b, :, r, c] / Z)[:, None, None, None]).sum(
                    0
                )
    torch.testing.assert_close(_patches(Rx, p), expected)
    torch.testing.assert_close(Rx.sum((1, 2, 3)), R.sum((1, 2, 3)), rtol=1e-6, atol=0)


@replicates
def test_conv_epsilon():
    B, C, p, D = 1, 2, 2, 3
    x, W, b, R = rnd(B, C, 4, 4), rnd(D, C, p, p), rnd(D), rnd(B, D, 2, 2)
    kw = dict(stride=(p, p), padding=(0, 0), dilation=(1, 1), groups=1)
    Rx = relevance_gxi(
        lambda x: rules.Epsilon.apply(F.conv2d(x, W, b, **kw), 1e-3), [x], R
    )[0]
    P = _patches(x, p)
    expected = torch.zeros_like(P)
    for r in range(2):
        for c in range(2):
            z = P[0, r, c][None] * W
            y = z.reshape(D, -1).sum(1) + b
            den = y + 1e-3 * torch.sign(y)
            expected[0, r, c] = (z * (R[0, :, r, c] / den)[:, None, None, None]).sum(0)
    torch.testing.assert_close(_patches(Rx, p), expected)


def test_every_rule_is_replicated():
    names = {f.__name__ for f in REPLICATES}
    assert len(names) == 18, names
    for name in rules.__all__:
        if name in ("sdiv", "stabilize"):
            continue
        assert getattr(rules, name).__doc__, name


def test_gradient_mode_gives_ordinary_gradients():
    """Inside ``Mode.gradient()``, every relevance rule backpropagates the
    gradient of its forward (one forward then serves the gradient and the
    LRP pass); outside it, the relevance."""
    mode = rules.Mode(gradients=True)
    x, W, b = rnd(2, 3, 6), rnd(4, 6), rnd(4)
    q, k, A = rnd(2, 3, 4), rnd(2, 3, 4), rnd(2, 3, 3).softmax(-1)
    img, Wc = rnd(2, 3, 4, 4), rnd(5, 3, 2, 2)
    kw = dict(stride=(2, 2), padding=(0, 0), dilation=(1, 1), groups=1)
    w_pool = torch.tensor([1.0, 0.0, 0.0], dtype=D64)
    cases = [
        (
            lambda x: rules.LinearAlpha1Beta0.apply(x, W, b, mode),
            lambda x: F.linear(x, W, b),
            [x],
        ),
        (
            lambda x: rules.LinearSeparate.apply(x, W, b, mode),
            lambda x: F.linear(x, W, b),
            [x],
        ),
        (lambda x: rules.PassThrough.apply(x, F.gelu, mode), F.gelu, [x]),
        (lambda x: rules.ZIdentity.apply(x, mode), lambda x: x * 1.0, [x]),
        (lambda a, c: rules.AddZ.apply(a, c, True, mode), torch.add, [x, x.flip(0)]),
        (lambda x: rules.PoolZ.apply(x, w_pool, mode), lambda x: x[:, 0], [x]),
        (
            lambda q, k: rules.QKHalf.apply(q, k, 0.5, mode),
            lambda q, k: 0.5 * q @ k.mT,
            [q, k],
        ),
        (lambda a, v: rules.AVHalf.apply(a, v, mode), torch.matmul, [A, q]),
        (
            lambda s: rules.PassThrough.apply(s, lambda t: t.softmax(-1), mode),
            lambda s: s.softmax(-1),
            [q],
        ),
        (
            lambda i: rules.ConvZBeta.apply(i, Wc, None, kw, mode),
            lambda i: F.conv2d(i, Wc, stride=2),
            [img],
        ),
    ]
    for rule, plain, inputs in cases:
        out = plain(*inputs)
        g = rnd(*out.shape)
        expected = relevance(plain, inputs, g)
        with mode.gradient():
            got = relevance(rule, inputs, g)
        for a, e in zip(got, expected):
            torch.testing.assert_close(a, e)
        outside = relevance(rule, inputs, g)  # the switch is undone
        assert any(not torch.equal(a, e) for a, e in zip(outside, expected))
    with pytest.raises(RuntimeError, match="not set up"):
        with rules.Mode().gradient():
            pass
