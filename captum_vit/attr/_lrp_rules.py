r"""LRP rules as small autograd Functions.

Every rule's ``forward`` computes the original operation; its ``backward``
maps the relevance of the output to the relevance of the inputs. With the
rules in place, ``torch.autograd.grad(logits, x, grad_outputs=start)``
returns relevance instead of a gradient. Operations without a rule
(reshapes, permutations, concatenation, slicing, eval-mode dropout) pass
relevance through unchanged, which is the LRP rule for them.

Notation: :math:`x^+ = \max(x, 0)`, :math:`x^- = \min(x, 0)` (also for
weights), :math:`\operatorname{sdiv}(a, b) = a / (b + 10^{-9})` where
:math:`b \ne 0` and :math:`0` where :math:`b = 0` (the ``safe_divide`` of
Chefer et al.'s code), :math:`\operatorname{stab}_\epsilon(z) = z +
\epsilon\,\operatorname{sign}(z)` with :math:`\operatorname{sign}(0) = 1`.
Equation numbers refer to Chefer, Gur, Wolf, "Transformer Interpretability
Beyond Attention Visualization", CVPR 2021 (https://arxiv.org/abs/2012.09838)
and Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance
Propagation for Transformers", ICML 2024 (https://arxiv.org/abs/2402.05602).

All sums that normalise relevance (the renormalised Add) are taken per
sample, so a sample's relevance never depends on the rest of its batch.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

__all__ = [
    "Mode",
    "sdiv",
    "stabilize",
    "PassThrough",
    "SoftmaxPass",
    "ZIdentity",
    "LinearAlpha1Beta0",
    "LinearSeparate",
    "LinearEpsilon",
    "NormEpsilon",
    "AddZ",
    "AddEpsilon",
    "PoolZ",
    "QKHalf",
    "AVHalf",
    "AVConstAttention",
    "SoftmaxAttnLRP",
    "ConvZBeta",
    "ConvEpsilon",
]

SDIV_EPS = 1e-9


def sdiv(a: Tensor, b: Tensor) -> Tensor:
    r"""Chefer et al.'s ``safe_divide``: :math:`a / (b + 10^{-9})`, 0 where
    :math:`b = 0` (the denominator is :math:`10^{-9}` where :math:`b + 10^{-9}`
    is exactly 0)."""
    den = b + SDIV_EPS
    hit = den == 0  # b == -1e-9 exactly: the reference divides by 1e-9
    if hit.any():
        den = den.masked_fill(hit, SDIV_EPS)
    return (a / den).masked_fill_(b == 0, 0.0)


def stabilize(z: Tensor, eps: float) -> Tensor:
    r""":math:`z + \epsilon\,\operatorname{sign}(z)`, with sign(0) = 1."""
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class Mode:
    """Shared switch of the rules of one pass: with ``gradient`` set, every
    rule's backward returns the ordinary gradient of its forward instead of
    relevance, so one forward serves a gradient pass and a relevance pass
    (``retain_graph=True`` between them)."""

    def __init__(self) -> None:
        self.gradient = False


def _grad(ctx) -> bool:
    mode = getattr(ctx, "mode", None)
    return mode is not None and mode.gradient


def _recomputed_grad(fn, x: Tensor, g: Tensor) -> Tensor:
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        (out,) = torch.autograd.grad(fn(xx), xx, g)
    return out


def _per_sample_sum(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1).reshape(-1, *([1] * (t.dim() - 1)))


# ----------------------------------------------------------------- identity
class PassThrough(Function):
    r"""Identity rule :math:`R_x = R_y` for ``y = fn(x)`` (LayerNorm, GELU,
    softmax and dropout in Chefer et al.'s ``layers_ours``/``layers_lrp``;
    elementwise nonlinearities in AttnLRP, eq. 9 of Achtibat et al.).

    ``fn`` must return a tensor of ``x``'s shape.
    """

    @staticmethod
    def forward(ctx, x: Tensor, fn: Callable[[Tensor], Tensor], mode=None) -> Tensor:
        ctx.mode, ctx.fn = mode, fn
        if mode is not None:
            ctx.save_for_backward(x)
        return fn(x)

    @staticmethod
    def backward(ctx, R: Tensor):
        if _grad(ctx):
            return _recomputed_grad(ctx.fn, ctx.saved_tensors[0], R), None, None
        return R, None, None


class SoftmaxPass(Function):
    r"""Identity rule through the softmax, :math:`R_x = R_s` (Chefer et al.'s
    ``layers_ours``/``layers_lrp``). The same as :class:`PassThrough` with a
    softmax, but with the softmax gradient written out for the gradient pass
    (no recomputation of the softmax).
    """

    @staticmethod
    def forward(ctx, x: Tensor, mode=None) -> Tensor:
        s = x.softmax(dim=-1)
        ctx.mode = mode
        if mode is not None:
            ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx, R: Tensor):
        if _grad(ctx):
            (s,) = ctx.saved_tensors
            return s * (R - (R * s).sum(dim=-1, keepdim=True)), None
        return R, None


class ZIdentity(Function):
    r"""The Clone rule of the residual fork (Chefer et al.'s ``Clone``):

    .. math::
        R_x = x \odot \textstyle\sum_k \operatorname{sdiv}(R_k, x)
            = x \odot \operatorname{sdiv}\!\left(\textstyle\sum_k R_k, x\right)

    Autograd has already summed the relevances of all uses of the output,
    so the rule sees :math:`\sum_k R_k`. Forward: ``x`` (a copy).
    """

    @staticmethod
    def forward(ctx, x: Tensor, mode=None) -> Tensor:
        ctx.save_for_backward(x)
        ctx.mode = mode
        return x.clone()

    @staticmethod
    def backward(ctx, R: Tensor):
        if _grad(ctx):
            return R, None
        (x,) = ctx.saved_tensors
        return x * sdiv(R, x), None


# ------------------------------------------------------------------- linear
class LinearAlpha1Beta0(Function):
    r"""LRP-:math:`\alpha_1\beta_0` for ``y = x W^T + b`` with the bias
    ignored (Chefer et al., eq. 3 with :math:`\alpha=1, \beta=0`; their
    ``layers_ours.Linear``):

    .. math::
        Z = x^+ W^{+\top} + x^- W^{-\top}, \quad
        S = \operatorname{sdiv}(R, Z), \quad
        R_x = x^+ \odot (S W^+) + x^- \odot (S W^-)
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], mode=None):
        ctx.save_for_backward(x, weight)
        ctx.mode = mode
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, R: Tensor):
        x, w = ctx.saved_tensors
        if _grad(ctx):
            return R @ w, None, None, None
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        S = sdiv(R, F.linear(xp, wp) + F.linear(xn, wn))
        return xp * (S @ wp) + xn * (S @ wn), None, None, None


class LinearSeparate(Function):
    r"""Chefer et al.'s ``layers_lrp.Linear`` (the rule of the "LRP" and
    "partial LRP" baselines): the two :math:`\alpha` terms normalised
    separately, biases ignored. Does not conserve relevance:

    .. math::
        R_x = x^+ \odot \left(\operatorname{sdiv}(R, x^+ W^{+\top}) W^+\right)
            + x^- \odot \left(\operatorname{sdiv}(R, x^- W^{-\top}) W^-\right)
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], mode=None):
        ctx.save_for_backward(x, weight)
        ctx.mode = mode
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, R: Tensor):
        x, w = ctx.saved_tensors
        if _grad(ctx):
            return R @ w, None, None, None
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        Rp = xp * (sdiv(R, F.linear(xp, wp)) @ wp)
        Rn = xn * (sdiv(R, F.linear(xn, wn)) @ wn)
        return Rp + Rn, None, None, None


class LinearEpsilon(Function):
    r"""LRP-:math:`\epsilon` for ``y = x W^T + b`` (AttnLRP's rule for linear
    layers, eq. 4 of Achtibat et al.; the bias absorbs its share):

    .. math::
        R_x = x \odot \left(\frac{R}{\operatorname{stab}_\epsilon(y)} W\right)
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float = 1e-6, mode=None):
        y = F.linear(x, weight, bias)
        ctx.save_for_backward(x, weight, y)
        ctx.eps, ctx.mode = eps, mode
        return y

    @staticmethod
    def backward(ctx, R: Tensor):
        x, w, y = ctx.saved_tensors
        if _grad(ctx):
            return R @ w, None, None, None, None
        return x * ((R / stabilize(y, ctx.eps)) @ w), None, None, None, None


class NormEpsilon(Function):
    r"""AttnLRP's LayerNorm rule (Achtibat et al., Sec. 3.3.3): the standard
    deviation is treated as a constant, which makes the norm the linear map
    :math:`y = \gamma \odot (x - \bar x) / \sigma + \beta`, and LRP-:math:`\epsilon`
    is applied to it:

    .. math::
        g = \frac{\gamma}{\sigma} \odot \frac{R}{\operatorname{stab}_\epsilon(y)},
        \qquad R_x = x \odot \left(g - \overline{g}\right)

    (:math:`\overline{\cdot}` is the mean over features). With
    :math:`\beta = 0` and :math:`\epsilon \to 0` it conserves relevance.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, norm_eps: float, eps: float = 1e-6, mode=None):
        y = F.layer_norm(x, x.shape[-1:], weight, bias, norm_eps)
        std = (x.var(dim=-1, unbiased=False, keepdim=True) + norm_eps).sqrt()
        ctx.save_for_backward(x, y, std, weight, bias)
        ctx.eps, ctx.mode, ctx.norm_eps = eps, mode, norm_eps
        return y

    @staticmethod
    def backward(ctx, R: Tensor):
        x, y, std, w, b = ctx.saved_tensors
        if _grad(ctx):

            def ln(t):
                return F.layer_norm(t, t.shape[-1:], w, b, ctx.norm_eps)

            return _recomputed_grad(ln, x, R), None, None, None, None, None
        g = R / stabilize(y, ctx.eps) / std
        if w is not None:
            g = g * w
        Rx = x * (g - g.mean(dim=-1, keepdim=True))
        return Rx, None, None, None, None, None


# -------------------------------------------------------------------- sums
class AddZ(Function):
    r"""Chefer et al.'s residual Add: z-rule, then (``renormalize=True``,
    their ``layers_ours.Add``) a per-sample renormalisation that keeps the
    total and gives each branch a share proportional to its absolute total:

    .. math::
        S = \operatorname{sdiv}(R, a + b), \quad R_a = a \odot S, \quad
        R_b = b \odot S, \\
        R_a \leftarrow R_a \cdot \operatorname{sdiv}\!\left(
            \operatorname{sdiv}(|s_a|, |s_a| + |s_b|)\, s, s_a\right)

    and the same for :math:`b`, with :math:`s_a = \sum R_a`,
    :math:`s_b = \sum R_b`, :math:`s = \sum R` per sample. With
    ``renormalize=False`` (``layers_lrp.Add``) only the z-rule is applied.
    ``b`` may broadcast over ``a`` (the positional embedding); its
    relevance is then returned summed over the broadcast axes.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, renormalize: bool = True, mode=None):
        ctx.save_for_backward(a, b)
        ctx.renormalize, ctx.mode = renormalize, mode
        return a + b

    @staticmethod
    def backward(ctx, R: Tensor):
        a, b = ctx.saved_tensors
        if _grad(ctx):
            return R, _unbroadcast(R, b.shape), None, None
        S = sdiv(R, a + b)
        Ra, Rb = a * S, b * S
        if ctx.renormalize:
            sa, sb, s = _per_sample_sum(Ra), _per_sample_sum(Rb), _per_sample_sum(R)
            tot = sa.abs() + sb.abs()
            Ra = Ra * sdiv(sdiv(sa.abs(), tot) * s, sa)
            Rb = Rb * sdiv(sdiv(sb.abs(), tot) * s, sb)
        return Ra, _unbroadcast(Rb, b.shape), None, None


class AddEpsilon(Function):
    r"""LRP-:math:`\epsilon` for a sum (AttnLRP's residual and
    positional-embedding adds, Achtibat et al. eq. 4 with an identity
    weight):

    .. math::
        R_a = a \odot \frac{R}{\operatorname{stab}_\epsilon(a + b)}, \qquad
        R_b = b \odot \frac{R}{\operatorname{stab}_\epsilon(a + b)}
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, eps: float = 1e-6, mode=None) -> Tensor:
        out = a + b
        ctx.save_for_backward(a, b, out)
        ctx.eps, ctx.mode = eps, mode
        return out

    @staticmethod
    def backward(ctx, R: Tensor):
        a, b, out = ctx.saved_tensors
        if _grad(ctx):
            return R, _unbroadcast(R, b.shape), None, None
        S = R / stabilize(out, ctx.eps)
        return a * S, _unbroadcast(b * S, b.shape), None, None


def _unbroadcast(R: Tensor, shape) -> Tensor:
    if R.shape == shape:
        return R
    dims = [i for i, (r, s) in enumerate(zip(R.shape, shape)) if s == 1 and r != 1]
    return R.sum(dim=dims, keepdim=True)


class PoolZ(Function):
    r"""z-rule for the pooling :math:`p = \sum_n w_n x_n` (class-token
    selection or patch mean; Chefer et al.'s ``IndexSelect``):

    .. math::
        R_{x_n} = w_n\, x_n \odot \operatorname{sdiv}(R, p)

    ``eps`` > 0 replaces :math:`\operatorname{sdiv}` by
    :math:`R / \operatorname{stab}_\epsilon(p)` (AttnLRP).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weights: Tensor, eps: float = 0.0, mode=None):
        p = torch.einsum("n,bnd->bd", weights, x)
        ctx.save_for_backward(x, weights, p)
        ctx.eps, ctx.mode = eps, mode
        return p

    @staticmethod
    def backward(ctx, R: Tensor):
        x, w, p = ctx.saved_tensors
        if _grad(ctx):
            return w[None, :, None] * R[:, None, :], None, None, None
        S = sdiv(R, p) if ctx.eps == 0 else R / stabilize(p, ctx.eps)
        return w[None, :, None] * x * S[:, None, :], None, None, None


# ---------------------------------------------------------------- attention
class QKHalf(Function):
    r"""z-rule on the attention scores :math:`s\,q k^\top`, halved between
    the two factors (Chefer et al. eq. 5-6 and their ``einsum`` relprop with
    ``/2``; AttnLRP's uniform rule, eq. 7). The scale :math:`s` cancels:

    .. math::
        S = \operatorname{sdiv}(R, q k^\top), \quad
        R_q = \tfrac12\, q \odot (S k), \quad
        R_k = \tfrac12\, k \odot (S^\top q)

    ``eps`` > 0 uses :math:`R / \operatorname{stab}_\epsilon(q k^\top)`.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, scale: float, eps: float = 0.0, mode=None):
        ctx.save_for_backward(q, k)
        ctx.eps, ctx.mode, ctx.scale = eps, mode, scale
        return (q * scale) @ k.transpose(-2, -1)

    @staticmethod
    def backward(ctx, R: Tensor):
        q, k = ctx.saved_tensors
        if _grad(ctx):
            gq = (R @ k) * ctx.scale
            gk = (R.transpose(-2, -1) @ q) * ctx.scale
            return gq, gk, None, None, None
        Z = q @ k.transpose(-2, -1)
        S = sdiv(R, Z) if ctx.eps == 0 else R / stabilize(Z, ctx.eps)
        Rq = q * (S @ k) / 2
        Rk = k * (S.transpose(-2, -1) @ q) / 2
        return Rq, Rk, None, None, None


class AVHalf(Function):
    r"""z-rule on the attention output :math:`O = A V`, halved between the
    factors (Chefer et al.; AttnLRP's uniform rule, eq. 7):

    .. math::
        S = \operatorname{sdiv}(R, A V), \quad
        R_A = \tfrac12\, A \odot (S V^\top), \quad
        R_V = \tfrac12\, V \odot (A^\top S)

    The halved :math:`R_A` is the ``attn_cam`` of Chefer et al.'s code.
    ``eps`` > 0 uses :math:`R / \operatorname{stab}_\epsilon(A V)`.
    """

    @staticmethod
    def forward(ctx, attn: Tensor, v: Tensor, eps: float = 0.0, mode=None):
        out = attn @ v
        ctx.save_for_backward(attn, v, out)
        ctx.eps, ctx.mode = eps, mode
        return out

    @staticmethod
    def backward(ctx, R: Tensor):
        attn, v, out = ctx.saved_tensors
        if _grad(ctx):
            return R @ v.transpose(-2, -1), attn.transpose(-2, -1) @ R, None, None
        S = sdiv(R, out) if ctx.eps == 0 else R / stabilize(out, ctx.eps)
        S = S / 2  # the halving, on the small (N, d) factor
        RA = attn * (S @ v.transpose(-2, -1))
        Rv = v * (attn.transpose(-2, -1) @ S)
        return RA, Rv, None, None


class AVConstAttention(Function):
    r"""CP-LRP's attention rule (Ali et al., ICML 2022, "XAI for Transformers:
    Better Explanations through Conservative Propagation"; the variant LXT
    uses inside the attention of its ViT example): the attention
    probabilities are held constant, so :math:`O = A V` is linear in
    :math:`V` and all of its relevance goes to :math:`V` (LRP-:math:`\epsilon`),
    none to :math:`A`:

    .. math::
        R_V = V \odot \left(A^\top \frac{R}{\operatorname{stab}_\epsilon(A V)}
            \right), \qquad R_A = 0
    """

    @staticmethod
    def forward(ctx, attn: Tensor, v: Tensor, eps: float = 1e-6, mode=None):
        out = attn @ v
        ctx.save_for_backward(attn, v, out)
        ctx.eps, ctx.mode = eps, mode
        return out

    @staticmethod
    def backward(ctx, R: Tensor):
        attn, v, out = ctx.saved_tensors
        if _grad(ctx):
            return R @ v.transpose(-2, -1), attn.transpose(-2, -1) @ R, None, None
        S = R / stabilize(out, ctx.eps)
        return None, v * (attn.transpose(-2, -1) @ S), None, None


class SoftmaxAttnLRP(Function):
    r"""AttnLRP's softmax rule (Achtibat et al., Prop. 3.1, the bias-free
    first-order Taylor decomposition at the input :math:`x`):

    .. math::
        R_{x_i} = x_i \left(R_i - s_i \textstyle\sum_j R_j\right),
        \qquad s = \operatorname{softmax}(x)

    It is what gradient times input gives for the softmax. Scores of
    ``-inf`` (masked) receive no relevance.
    """

    @staticmethod
    def forward(ctx, x: Tensor, mode=None) -> Tensor:
        s = x.softmax(dim=-1)
        ctx.save_for_backward(x, s)
        ctx.mode = mode
        return s

    @staticmethod
    def backward(ctx, R: Tensor):
        x, s = ctx.saved_tensors
        if _grad(ctx):
            return s * (R - (R * s).sum(dim=-1, keepdim=True)), None
        xf = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
        return xf * (R - s * R.sum(dim=-1, keepdim=True)), None


# ------------------------------------------------------------- convolution
def _conv_input_grad(x_shape, weight, S, conv_kwargs):
    return torch.nn.grad.conv2d_input(x_shape, weight, S, **conv_kwargs)


class ConvZBeta(Function):
    r""":math:`z^\mathcal{B}` rule for the patch convolution (Chefer et al.'s
    ``layers_ours.Conv2d`` on 3-channel input; Montavon et al. 2017), with
    per-image bounds :math:`l = \min x`, :math:`h = \max x` and the bias
    ignored:

    .. math::
        Z = x * W - l * W^+ - h * W^- + 10^{-9}, \quad S = R / Z, \\
        R_x = x \odot (S \star W) - l\,(S \star W^+) - h\,(S \star W^-)

    (:math:`*` convolution, :math:`\star` its transpose; the 1e-9 and the
    plain division are the reference's).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias, conv_kwargs: dict, mode=None):
        ctx.save_for_backward(x, weight)
        ctx.conv_kwargs, ctx.mode = conv_kwargs, mode
        return F.conv2d(x, weight, bias, **conv_kwargs)

    @staticmethod
    def backward(ctx, R: Tensor):
        x, w = ctx.saved_tensors
        kw = ctx.conv_kwargs
        if _grad(ctx):
            return _conv_input_grad(x.shape, w, R, kw), None, None, None, None
        B = x.shape[0]
        flat = x.reshape(B, -1)
        low, high = flat.amin(dim=1), flat.amax(dim=1)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        if _is_patchify(w, kw):
            Rx = _zbeta_patches(x, w, wp, wn, low, high, R)
            return Rx, None, None, None, None
        shape = (B,) + (1,) * (x.dim() - 1)
        L = low.reshape(shape).expand_as(x).contiguous()
        H = high.reshape(shape).expand_as(x).contiguous()
        Z = (
            F.conv2d(x, w, None, **kw)
            - F.conv2d(L, wp, None, **kw)
            - F.conv2d(H, wn, None, **kw)
            + 1e-9
        )
        S = R / Z
        Rx = (
            x * _conv_input_grad(x.shape, w, S, kw)
            - L * _conv_input_grad(x.shape, wp, S, kw)
            - H * _conv_input_grad(x.shape, wn, S, kw)
        )
        return Rx, None, None, None, None


def _is_patchify(w: Tensor, kw: dict) -> bool:
    """A convolution whose stride equals its kernel (a patch embedding)."""
    return (
        tuple(kw["stride"]) == tuple(w.shape[-2:])
        and tuple(kw["padding"]) == (0, 0)
        and tuple(kw["dilation"]) == (1, 1)
        and kw["groups"] == 1
    )


def _zbeta_patches(x, w, wp, wn, low, high, R):
    """The z-beta rule of a patchifying convolution as matrix products (the
    same equation as the convolution form, much faster on CPU)."""
    B, C, Hh, Ww = x.shape
    D, _, ph, pw = w.shape
    gh, gw = R.shape[-2:]
    P = x[..., : gh * ph, : gw * pw].reshape(B, C, gh, ph, gw, pw)
    P = P.permute(0, 2, 4, 1, 3, 5).reshape(B, gh, gw, -1)
    Wf, Wp, Wn = w.reshape(D, -1), wp.reshape(D, -1), wn.reshape(D, -1)
    lo, hi = low.reshape(B, 1, 1, 1), high.reshape(B, 1, 1, 1)
    Z = P @ Wf.T - lo * Wp.sum(1) - hi * Wn.sum(1) + 1e-9
    S = R.permute(0, 2, 3, 1) / Z
    Rp = P * (S @ Wf) - lo * (S @ Wp) - hi * (S @ Wn)
    Rp = Rp.reshape(B, gh, gw, C, ph, pw).permute(0, 3, 1, 4, 2, 5)
    Rx = torch.zeros_like(x)
    Rx[..., : gh * ph, : gw * pw] = Rp.reshape(B, C, gh * ph, gw * pw)
    return Rx


class ConvEpsilon(Function):
    r"""LRP-:math:`\epsilon` for a convolution ``y = x * W + b``:

    .. math::
        R_x = x \odot \left(\frac{R}{\operatorname{stab}_\epsilon(y)} \star W\right)
    """

    @staticmethod
    def forward(ctx, x, weight, bias, conv_kwargs: dict, eps: float = 1e-6, mode=None):
        y = F.conv2d(x, weight, bias, **conv_kwargs)
        ctx.save_for_backward(x, weight, y)
        ctx.conv_kwargs, ctx.eps, ctx.mode = conv_kwargs, eps, mode
        return y

    @staticmethod
    def backward(ctx, R: Tensor):
        x, w, y = ctx.saved_tensors
        if _grad(ctx):
            gx = _conv_input_grad(x.shape, w, R, ctx.conv_kwargs)
            return gx, None, None, None, None, None
        S = R / stabilize(y, ctx.eps)
        Rx = x * _conv_input_grad(x.shape, w, S, ctx.conv_kwargs)
        return Rx, None, None, None, None, None
