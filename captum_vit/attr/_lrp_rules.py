r"""LRP rules as small autograd Functions, in two formulations.

**Relevance rules** (Chefer et al.'s ``layers_ours`` / ``layers_lrp``): the
backward of every rule maps the relevance of its output to the relevance of
its inputs, so ``torch.autograd.grad(logits, x, grad_outputs=start)``
returns relevance. Operations without a rule (reshapes, permutations,
concatenation, slicing, eval-mode dropout) pass relevance through unchanged,
which is the LRP rule for them. Inside :meth:`Mode.gradient` the same rules
return ordinary gradients, so one forward serves a gradient pass and a
relevance pass.

**Gradient x input rules** (AttnLRP, the formulation of the LXT project):
the backward carries a *modified gradient* :math:`g` such that the relevance
of every tensor :math:`t` of the forward is :math:`R_t = t \odot g_t`. Every
LRP-:math:`\epsilon` rule of a linear operation with its bias absorbing a
share is then the operation's ordinary gradient (times
:math:`y / \operatorname{stab}_\epsilon(y)` for :math:`\epsilon > 0`), so
the linear layers, sums, matmuls and the softmax run as plain torch
operations on detached parameters, and only three small Functions change the
gradient: :class:`IdentityRule`, :class:`UniformRule` and
:class:`ConstantStdLayerNorm`, plus :class:`Epsilon` for the stabiliser.
One ordinary backward pass, with no parameter gradient, computes the
relevance; the input relevance is ``x * grad``.

Notation: :math:`x^+ = \max(x, 0)`, :math:`x^- = \min(x, 0)` (also for
weights), :math:`\operatorname{sdiv}(a, b) = a / (b + 10^{-9})` where
:math:`b \ne 0` and :math:`0` where :math:`b = 0` (the ``safe_divide`` of
Chefer et al.'s code), :math:`\operatorname{stab}_\epsilon(z) = z +
\epsilon\,\operatorname{sign}(z)` (the sign of a signed zero; where
:math:`z = 0` the gradient x input rules give 0 either way).
Equation numbers refer to Chefer, Gur, Wolf, "Transformer Interpretability
Beyond Attention Visualization", CVPR 2021 (https://arxiv.org/abs/2012.09838)
and Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance
Propagation for Transformers", ICML 2024 (https://arxiv.org/abs/2402.05602).

All sums that normalise relevance (the renormalised Add) are taken per
sample, so a sample's relevance never depends on the rest of its batch.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.nn.grad import conv2d_input

__all__ = [
    "Mode",
    "sdiv",
    "stabilize",
    "PassThrough",
    "ZIdentity",
    "LinearAlpha1Beta0",
    "LinearSeparate",
    "AddZ",
    "PoolZ",
    "FixedLinearZ",
    "ProductHalf",
    "QKHalf",
    "AVHalf",
    "AttentionHalf",
    "Tap",
    "AttentionConsumer",
    "attention_probs",
    "qk_half",
    "av_half",
    "ConvZBeta",
    "IdentityRule",
    "UniformRule",
    "ConstantStdLayerNorm",
    "Epsilon",
]

SDIV_EPS = 1e-9

#: what a relevance rule's backward returns: one entry per forward argument
Grads = Tuple[Optional[Tensor], ...]


def sdiv(a: Tensor, b: Tensor) -> Tensor:
    r"""Chefer et al.'s ``safe_divide``: :math:`a / (b + 10^{-9})`, 0 where
    :math:`b = 0` (the denominator is :math:`10^{-9}` where :math:`b + 10^{-9}`
    is exactly 0).

    Written with float arithmetic and in-place steps (boolean masks and fresh
    allocations dominate elementwise cost on CPU): the zeros come from
    multiplying by :math:`|\operatorname{sign}(b)|`. The one case that needs a
    mask, :math:`b = -10^{-9}` exactly, shows as a non-finite value and is then
    recomputed with masks.
    """
    den = b + SDIV_EPS
    out = torch.div(a, den, out=den) if a.shape == den.shape else a / den
    out.mul_(torch.sign(b).abs_())
    if torch.isfinite(out.sum()):
        return out
    den = b + SDIV_EPS
    den = den.masked_fill(den == 0, SDIV_EPS)
    return (a / den).masked_fill_(b == 0, 0.0)


def stabilize(z: Tensor, eps: float) -> Tensor:
    r""":math:`z + \epsilon\,\operatorname{sign}(z)` with the sign of a signed
    zero (:math:`+\epsilon` at :math:`+0`, :math:`-\epsilon` at :math:`-0`)."""
    return torch.copysign(torch.tensor(eps, dtype=z.dtype), z).add_(z)


class Mode:
    """What the relevance rules of one forward pass compute in backward.

    One ``Mode`` is created per pass (never shared between calls). By default
    the rules return relevance; inside :meth:`gradient` they return the
    ordinary gradient of their forward, so one forward serves a gradient pass
    and a relevance pass (``retain_graph=True`` between them).

    Args:
        gradients (bool, optional): whether a gradient pass will run; only then
            do the identity rules keep what the gradient needs. Default: False
    """

    def __init__(self, gradients: bool = False) -> None:
        self.gradients = gradients
        self.is_gradient = False

    @contextlib.contextmanager
    def gradient(self) -> Iterator[None]:
        """Backward passes inside the context compute ordinary gradients."""
        if not self.gradients:
            raise RuntimeError("this pass was not set up for a gradient pass")
        self.is_gradient = True
        try:
            yield
        finally:
            self.is_gradient = False


def _grad(ctx: Any) -> bool:
    mode = getattr(ctx, "mode", None)
    return mode is not None and mode.is_gradient


def _saves_for_gradient(mode: Optional[Mode]) -> bool:
    return mode is not None and mode.gradients


def _recomputed_grad(fn: Callable[[Tensor], Tensor], x: Tensor, g: Tensor) -> Tensor:
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        (out,) = torch.autograd.grad(fn(xx), xx, g)
    return out


def _per_sample_sum(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1).reshape(-1, *([1] * (t.dim() - 1)))


def _unbroadcast(R: Tensor, shape: Sequence[int]) -> Tensor:
    if R.shape == shape:
        return R
    dims = [i for i, (r, s) in enumerate(zip(R.shape, shape)) if s == 1 and r != 1]
    return R.sum(dim=dims, keepdim=True)


# =============================================================================
# Relevance rules (Chefer et al.)
# =============================================================================
class PassThrough(Function):
    r"""Identity rule :math:`R_x = R_y` for ``y = fn(x)`` (LayerNorm, GELU,
    softmax and dropout in Chefer et al.'s ``layers_ours``/``layers_lrp``).

    ``fn`` must return a tensor of ``x``'s shape. When the pass has a gradient
    pass, ``fn``'s own autograd graph is kept, so the gradient pass reuses it
    instead of recomputing ``fn``.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor], mode: Optional[Mode] = None
    ) -> Tensor:
        ctx.mode = mode
        if not _saves_for_gradient(mode):
            return fn(x)
        with torch.enable_grad():
            ctx.x = x.detach().requires_grad_(True)
            ctx.y = fn(ctx.x)
        return ctx.y.detach()

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        if _grad(ctx):
            (g,) = torch.autograd.grad(ctx.y, ctx.x, R, retain_graph=True)
            return g, None, None
        return R, None, None


class ZIdentity(Function):
    r"""The Clone rule of the residual fork (Chefer et al.'s ``Clone``):

    .. math::
        R_x = x \odot \textstyle\sum_k \operatorname{sdiv}(R_k, x)
            = x \odot \operatorname{sdiv}\!\left(\textstyle\sum_k R_k, x\right)

    Autograd has already summed the relevances of all uses of the output,
    so the rule sees :math:`\sum_k R_k`. Forward: ``x`` (a view, no copy).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, mode: Optional[Mode] = None) -> Tensor:
        ctx.save_for_backward(x)
        ctx.mode = mode
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        if _grad(ctx):
            return R, None
        (x,) = ctx.saved_tensors
        return sdiv(R, x).mul_(x), None


def _signed_pick(x: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """``x+ * pos + x- * neg``, overwriting ``pos`` and ``neg``."""
    xp = x.clamp(min=0)
    pos.mul_(xp)
    return pos.add_(neg.mul_(torch.sub(x, xp, out=xp)))  # x - x+ = x-, exactly


class LinearAlpha1Beta0(Function):
    r"""LRP-:math:`\alpha_1\beta_0` for ``y = x W^T + b`` with the bias
    ignored (Chefer et al., eq. 3 with :math:`\alpha=1, \beta=0`; their
    ``layers_ours.Linear``):

    .. math::
        Z = x^+ W^{+\top} + x^- W^{-\top}, \quad
        S = \operatorname{sdiv}(R, Z), \quad
        R_x = x^+ \odot (S W^+) + x^- \odot (S W^-)

    :math:`Z` costs one matrix product, not two: since
    :math:`x W^\top = x^+W^{+\top} + x^-W^{-\top} + x^+W^{-\top} + x^-W^{+\top}`
    and :math:`|x|\,|W|^\top` is the same sum with the last two terms
    negated, :math:`Z = \tfrac12\left(y - b + |x|\,|W|^\top\right)` with the
    forward's :math:`y`. :math:`Z \ge 0`, and where :math:`Z = 0` every term
    :math:`x^\pm_i W^\pm_{ji}` is zero, so the product already gives the 0 of
    :math:`\operatorname{sdiv}` there.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        mode: Optional[Mode] = None,
    ) -> Tensor:
        y = F.linear(x, weight, bias)
        ctx.save_for_backward(x, weight, bias, y)
        ctx.mode = mode
        return y

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        x, w, b, y = ctx.saved_tensors
        if _grad(ctx):
            return R @ w, None, None, None
        # Z + 1e-9 = (y - b + |x| |W|^T) / 2 + 1e-9: one addmm, in place
        den = torch.addmm(
            y.reshape(-1, y.shape[-1]),
            x.abs().reshape(-1, x.shape[-1]),
            w.abs().T,
            beta=0.5,
            alpha=0.5,
        ).reshape(y.shape)
        if b is not None:
            den.sub_(b * 0.5)
        S = torch.div(R, den.add_(SDIV_EPS), out=den)
        Rx = _signed_pick(x, S @ w.clamp(min=0), S @ w.clamp(max=0))
        return Rx, None, None, None


class LinearSeparate(Function):
    r"""Chefer et al.'s ``layers_lrp.Linear`` (the rule of the "LRP" and
    "partial LRP" baselines): the two :math:`\alpha` terms normalised
    separately, biases ignored. Does not conserve relevance:

    .. math::
        R_x = x^+ \odot \left(\operatorname{sdiv}(R, x^+ W^{+\top}) W^+\right)
            + x^- \odot \left(\operatorname{sdiv}(R, x^- W^{-\top}) W^-\right)
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        mode: Optional[Mode] = None,
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.mode = mode
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        x, w = ctx.saved_tensors
        if _grad(ctx):
            return R @ w, None, None, None
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        Rp = sdiv(R, F.linear(xp, wp)) @ wp
        Rn = sdiv(R, F.linear(xn, wn)) @ wn
        return _signed_pick(x, Rp, Rn), None, None, None


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
    def forward(
        ctx: Any,
        a: Tensor,
        b: Tensor,
        renormalize: bool = True,
        mode: Optional[Mode] = None,
    ) -> Tensor:
        out = a + b
        ctx.save_for_backward(a, b, out)
        ctx.renormalize, ctx.mode = renormalize, mode
        return out

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        a, b, out = ctx.saved_tensors
        if _grad(ctx):
            return R, _unbroadcast(R, b.shape), None, None
        S = sdiv(R, out)
        Ra = a * S
        Rb = S.mul_(b) if b.shape == S.shape else b * S
        if ctx.renormalize:
            sa, sb, s = _per_sample_sum(Ra), _per_sample_sum(Rb), _per_sample_sum(R)
            tot = sa.abs() + sb.abs()
            Ra.mul_(sdiv(sdiv(sa.abs(), tot) * s, sa))
            Rb.mul_(sdiv(sdiv(sb.abs(), tot) * s, sb))
        return Ra, _unbroadcast(Rb, b.shape), None, None


class PoolZ(Function):
    r"""z-rule for the pooling :math:`p = \sum_n w_n x_n` (class-token
    selection or patch mean; Chefer et al.'s ``IndexSelect``):

    .. math::
        R_{x_n} = w_n\, x_n \odot \operatorname{sdiv}(R, p)
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weights: Tensor, mode: Optional[Mode] = None
    ) -> Tensor:
        p = torch.einsum("n,bnd->bd", weights, x)
        ctx.save_for_backward(x, weights, p)
        ctx.mode = mode
        return p

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        x, w, p = ctx.saved_tensors
        if _grad(ctx):
            return w[None, :, None] * R[:, None, :], None, None
        return sdiv(R, p)[:, None, :] * x * w[None, :, None], None, None


class FixedLinearZ(Function):
    r"""z-rule for a fixed linear map without bias, :math:`y = W x` with
    :math:`W` independent of the input (given as the function ``fn``; the
    rotary position embedding, a rotation of each position's ``q`` and
    ``k``). The rule :class:`PoolZ` gives the other fixed linear map, the
    pooling:

    .. math::
        R_x = x \odot W^\top \operatorname{sdiv}(R, W x)

    Conserves, :math:`\sum R_x = \sum R` where :math:`y \ne 0`. The
    transposed map :math:`W^\top` is ``fn``'s vector-Jacobian product
    (recomputed in backward: ``fn`` must be linear and bias-free).
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor], mode: Optional[Mode] = None
    ) -> Tensor:
        y = fn(x)
        ctx.save_for_backward(x, y)
        ctx.fn, ctx.mode = fn, mode
        return y

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        x, y = ctx.saved_tensors
        if _grad(ctx):
            return _recomputed_grad(ctx.fn, x, R), None, None
        return _recomputed_grad(ctx.fn, x, sdiv(R, y)).mul_(x), None, None


class ProductHalf(Function):
    r"""z-rule on an elementwise product of two branches :math:`y = a \odot
    b` (SwiGLU's gate :math:`\mathrm{SiLU}(x W_g) \odot x W_x`), halved
    between the two factors as :class:`QKHalf` and :class:`AVHalf` halve the
    attention's products (Chefer et al.):

    .. math::
        R_a = R_b = \tfrac12\, a \odot b \odot \operatorname{sdiv}(R, a \odot b)

    that is :math:`\tfrac12 R` wherever :math:`y \ne 0` (no sum runs over
    the product, so each factor's z-rule share is the whole of it).
    """

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, mode: Optional[Mode] = None) -> Tensor:
        ctx.save_for_backward(a, b)  # the product is recomputed in backward
        ctx.mode = mode
        return a * b

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        a, b = ctx.saved_tensors
        if _grad(ctx):
            return R * b, R * a, None
        y = a * b
        half = sdiv(R, y).mul_(y).mul_(0.5)
        return half, half.clone(), None


def qk_half(q: Tensor, k: Tensor, R: Tensor) -> Tuple[Tensor, Tensor]:
    r"""The equation of :class:`QKHalf`: ``(R_q, R_k)`` for the relevance
    ``R`` of the scores."""
    S = sdiv(R, q @ k.transpose(-2, -1)).mul_(0.5)
    return (S @ k).mul_(q), (S.transpose(-2, -1) @ q).mul_(k)


def av_half(attn: Tensor, v: Tensor, R: Tensor) -> Tuple[Tensor, Tensor]:
    r"""The equation of :class:`AVHalf`: ``(R_A, R_V)`` for the relevance
    ``R`` of :math:`A V` (which is recomputed, a small product)."""
    S = sdiv(R, attn @ v).mul_(0.5)  # the halving, on the small (N, d) factor
    return (S @ v.transpose(-2, -1)).mul_(attn), (attn.transpose(-2, -1) @ S).mul_(v)


class QKHalf(Function):
    r"""z-rule on the attention scores :math:`s\,q k^\top`, halved between
    the two factors (Chefer et al. eq. 5-6 and their ``einsum`` relprop with
    ``/2``). The scale :math:`s` cancels:

    .. math::
        S = \operatorname{sdiv}(R, q k^\top), \quad
        R_q = \tfrac12\, q \odot (S k), \quad
        R_k = \tfrac12\, k \odot (S^\top q)
    """

    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, scale: float, mode: Optional[Mode] = None
    ) -> Tensor:
        ctx.save_for_backward(q, k)
        ctx.mode, ctx.scale = mode, scale
        return (q * scale) @ k.transpose(-2, -1)

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        q, k = ctx.saved_tensors
        if _grad(ctx):
            gq = (R @ k).mul_(ctx.scale)
            gk = (R.transpose(-2, -1) @ q).mul_(ctx.scale)
            return gq, gk, None, None
        return (*qk_half(q, k, R), None, None)


class AVHalf(Function):
    r"""z-rule on the attention output :math:`O = A V`, halved between the
    factors (Chefer et al.):

    .. math::
        S = \operatorname{sdiv}(R, A V), \quad
        R_A = \tfrac12\, A \odot (S V^\top), \quad
        R_V = \tfrac12\, V \odot (A^\top S)

    The halved :math:`R_A` is the ``attn_cam`` of Chefer et al.'s code.
    """

    @staticmethod
    def forward(
        ctx: Any, attn: Tensor, v: Tensor, mode: Optional[Mode] = None
    ) -> Tensor:
        ctx.save_for_backward(attn, v)
        ctx.mode = mode
        return attn @ v

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        attn, v = ctx.saved_tensors
        if _grad(ctx):
            return R @ v.transpose(-2, -1), attn.transpose(-2, -1) @ R, None
        return (*av_half(attn, v, R), None)


class AttentionConsumer(Protocol):
    """Receives, for one layer and one call, what arrives at the attention
    probabilities :math:`A` in the backward passes."""

    def gradient(
        self, *, attention: Optional[Tensor], output: Optional[Tensor]
    ) -> None:
        """The gradient pass reached :math:`A` (its gradient) or :math:`A V`
        (the gradient there, from which :math:`A`'s follows)."""

    def relevance(self, rel: Tensor, v: Optional[Tensor]) -> None:
        """The relevance pass reached :math:`A` with relevance ``rel``."""


def attention_probs(
    q: Tensor, k: Tensor, scale: float, mask: Optional[Tensor] = None
) -> Tensor:
    r""":math:`\mathrm{softmax}(s\,q k^\top + M)`, as the adapters' tracer
    computes it."""
    scores = (q * scale) @ k.transpose(-2, -1)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    return scores.softmax(dim=-1)


class AttentionHalf(Function):
    r"""Chefer et al.'s rules for the whole attention core
    :math:`O = \mathrm{softmax}(s\,q k^\top) V` in one Function: the halved
    z-rule of :class:`AVHalf`, the identity through the softmax and the
    halved z-rule of :class:`QKHalf`:

    .. math::
        (R_A, R_V) = \mathrm{AVHalf}(R), \qquad
        (R_q, R_k) = \mathrm{QKHalf}(R_A)

    The forward runs torch's fused attention kernel and keeps only
    :math:`q, k, v`; the backward recomputes :math:`A` for its layer, so no
    ``(B, H, N, N)`` tensor outlives its layer. ``consumer`` (optional)
    receives :math:`R_A`, and in the gradient pass the gradient at
    :math:`O`.
    """

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        scale: float,
        mask: Optional[Tensor],
        mode: Optional[Mode] = None,
        consumer: Optional[AttentionConsumer] = None,
    ) -> Tensor:
        ctx.save_for_backward(q, k, v, mask)
        ctx.scale, ctx.mode, ctx.consumer = scale, mode, consumer
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
        q, k, v, mask = ctx.saved_tensors
        attn = attention_probs(q, k, ctx.scale, mask)
        consumer = ctx.consumer
        if _grad(ctx):
            if consumer is not None:
                consumer.gradient(attention=None, output=R)
            gv = attn.transpose(-2, -1) @ R
            gs = R @ v.transpose(-2, -1)  # the gradient at A, then at the scores
            gs.sub_((gs * attn).sum(dim=-1, keepdim=True)).mul_(attn)
            gq = (gs @ k).mul_(ctx.scale)
            gk = (gs.transpose(-2, -1) @ q).mul_(ctx.scale)
            return gq, gk, gv, None, None, None, None
        RA, Rv = av_half(attn, v, R)
        del attn
        if consumer is not None:
            consumer.relevance(RA, v)
        Rq, Rk = qk_half(q, k, RA)
        return Rq, Rk, Rv, None, None, None, None


class Tap(Function):
    """Identity on the attention probabilities :math:`A` of the op-by-op path
    that hands what arrives at them in backward to a consumer: the gradient
    in the gradient pass, else the relevance (``A * g`` for gradient x
    input rules, ``g`` for relevance rules)."""

    @staticmethod
    def forward(
        ctx: Any,
        attn: Tensor,
        consumer: AttentionConsumer,
        mode: Optional[Mode],
        gradient_times_input: bool,
    ) -> Tensor:
        ctx.save_for_backward(attn)
        ctx.consumer, ctx.mode, ctx.gxi = consumer, mode, gradient_times_input
        return attn.view_as(attn)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Grads:
        (attn,) = ctx.saved_tensors
        if _grad(ctx):
            ctx.consumer.gradient(attention=g, output=None)
        else:
            ctx.consumer.relevance(attn * g if ctx.gxi else g, None)
        return g, None, None, None


def _conv_input_grad(
    x_shape: Sequence[int], weight: Tensor, S: Tensor, conv_kwargs: dict
) -> Tensor:
    return conv2d_input(x_shape, weight, S, **conv_kwargs)


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
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        conv_kwargs: dict,
        mode: Optional[Mode] = None,
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv_kwargs, ctx.mode = conv_kwargs, mode
        return F.conv2d(x, weight, bias, **conv_kwargs)

    @staticmethod
    def backward(ctx: Any, R: Tensor) -> Grads:
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


def _zbeta_patches(
    x: Tensor,
    w: Tensor,
    wp: Tensor,
    wn: Tensor,
    low: Tensor,
    high: Tensor,
    R: Tensor,
) -> Tensor:
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


# =============================================================================
# Gradient x input rules (AttnLRP, LXT's formulation): R_t = t * g_t
# =============================================================================
class IdentityRule(Function):
    r"""Identity rule :math:`R_x = R_y` for an elementwise ``y = fn(x)``
    (AttnLRP eq. 9, for GELU and other elementwise nonlinearities), as a
    modified gradient: with :math:`R = t \odot g`,

    .. math::
        g_x = g_y \odot \frac{y}{x} \qquad (0 \text{ where } x = 0)

    Saves the ratio :math:`y / x` (one tensor of ``x``'s shape; 0 where it is
    not finite).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        y = fn(x)
        ratio = torch.div(y, x).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        ctx.save_for_backward(ratio)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Grads:
        return g * ctx.saved_tensors[0], None


class UniformRule(Function):
    r"""AttnLRP's uniform rule for a product of ``n`` factors (eq. 7, the
    attention matmuls :math:`q k^\top` and :math:`A V`, and SwiGLU's
    elementwise gate :math:`\mathrm{SiLU}(x W_g) \odot x W_x`): each factor receives
    :math:`1/n` of the relevance its gradient x input would give it. Applied
    to a factor before the product:

    .. math::
        y = x, \qquad g_x = g_y / n
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, n: float) -> Tensor:
        ctx.n = n
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Grads:
        return g / ctx.n, None


class ConstantStdLayerNorm(Function):
    r"""AttnLRP's LayerNorm rule (Achtibat et al., Sec. 3.3.3): the standard
    deviation :math:`\sigma` is held constant, which makes the norm the linear
    map :math:`y = \gamma \odot (x - \bar x) / \sigma + \beta`; its gradient
    x input is LRP-0 (:math:`\beta` absorbing its share):

    .. math::
        g_x = \frac{\gamma \odot g_y}{\sigma}
            - \overline{\left(\frac{\gamma \odot g_y}{\sigma}\right)}

    (:math:`\overline{\cdot}` the mean over features). Saves
    :math:`1/\sigma` only.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        norm_eps: float,
    ) -> Tensor:
        y, _, rstd = torch.native_layer_norm(x, x.shape[-1:], weight, bias, norm_eps)
        ctx.save_for_backward(rstd, weight)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Grads:
        rstd, w = ctx.saved_tensors
        h = g * rstd if w is None else g * w * rstd
        return h - h.mean(dim=-1, keepdim=True), None, None, None


class Epsilon(Function):
    r"""LRP-:math:`\epsilon` of the linear operation that produced ``y``
    (AttnLRP's rule for linear layers, sums, the matmuls, the pooling and the
    LayerNorm's linear map; Achtibat et al. eq. 4, the bias absorbing its
    share). With :math:`R = t \odot g`, LRP-:math:`\epsilon`,
    :math:`R_x = x \odot J^\top \left(R_y / \operatorname{stab}_\epsilon(y)
    \right)`, is the operation's gradient of

    .. math::
        y' = y, \qquad g_{y'} \mapsto g_y = g_{y'} \odot
            \frac{y}{\operatorname{stab}_\epsilon(y)}

    Saves ``y``. Not applied for :math:`\epsilon = 0` (LRP-0 is the plain
    gradient).
    """

    @staticmethod
    def forward(ctx: Any, y: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(y)
        ctx.eps = eps
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Grads:
        (y,) = ctx.saved_tensors
        den = stabilize(y, ctx.eps)
        return torch.div(y, den, out=den).mul_(g), None
