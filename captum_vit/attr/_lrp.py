"""The LRP engine: rule sets applied to a stock model, without rewriting it.

A :class:`RuleSet` says which rule of :mod:`._lrp_rules` each operation
gets; it is configuration only (no state of a call lives on it).
:func:`lrp_context` is the one place where rules are applied to the model an
adapter wraps:

* the functional operations (the two attention matmuls, the softmax, the
  residual sums, the positional-embedding sum and the pooling) are routed
  through an :class:`LRPTracer` by :meth:`ViTAdapter.trace`;
* the modules the adapter lists (:meth:`~ViTAdapter.block_parts`,
  :meth:`~ViTAdapter.embedding_parts`, :meth:`~ViTAdapter.head_parts`) get an
  instance-level ``forward`` that calls the rule, like zennit's canonizers.

Everything a call needs (the tracer, the :class:`~._lrp_rules.Mode` switch
between gradient and relevance) is created by that call, so one rule set can
serve several threads. The changes go through
:func:`captum_vit.adapters.patching`: the model's lock is held for the whole
context, other threads' calls run the stock code meanwhile, and on exit, also
when the body raised, every instance attribute that was set is removed again
(or the user's own restored). No class is touched, no attribute is written
onto a user module, no weight is changed, and no parameter gradient is
computed: the rules see parameters detached.

Two formulations (see :mod:`._lrp_rules`): Chefer et al.'s rule sets carry
relevance through the backward pass; AttnLRP carries a modified gradient
(gradient x input, as the LXT project does), so that its pass is one ordinary
backward pass through plain torch operations.
"""

from __future__ import annotations

import contextlib
from typing import (
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..adapters import Mask, Tracer, ViTAdapter, patching
from . import _lrp_rules as R
from ._base import RELEVANCE_IN_HALF, GraphAttribution, ViTAttribution, check_choice

__all__ = [
    "RuleSet",
    "OriginalRules",
    "AttnLRPRules",
    "RULE_SETS",
    "LRPTracer",
    "AttentionTap",
    "RelevancePass",
    "RelevanceAttribution",
    "lrp_context",
    "relevance_pass",
]

Mode = R.Mode


# ----------------------------------------------------------------- rule sets
def _is_linear(m: nn.Module) -> bool:
    w = getattr(m, "weight", None)
    return isinstance(w, Tensor) and w.dim() == 2 and not _is_norm(m)


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.LayerNorm, nn.GroupNorm)) or hasattr(m, "normalized_shape")


def _skip(m: Optional[nn.Module]) -> bool:
    return m is None or isinstance(m, (nn.Identity, nn.Dropout))


def _params(module: nn.Module) -> Tuple[Tensor, Optional[Tensor]]:
    """The module's weight and bias, detached: no rule builds a graph that
    reaches a parameter."""
    w, b = module.weight, getattr(module, "bias", None)
    if not isinstance(w, Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return w.detach(), b.detach() if isinstance(b, Tensor) else None


class RuleSet:
    """Which rule each operation of a ViT gets; subclasses pick the rules.

    The defaults are Chefer et al.'s ``layers_ours`` rules (``"chefer2021"``),
    which carry relevance through the backward pass. Every method takes the
    call's :class:`~._lrp_rules.Mode`; a rule set holds configuration only.
    """

    name = "chefer2021"
    #: relevance at the logits starts at one (Chefer) or the logit (AttnLRP)
    start_at_logit = False
    #: whether the backward carries a modified gradient (``R = t * g``)
    #: instead of relevance
    gradient_times_input = False

    # modules
    def linear(self, module: nn.Module, x: Tensor, mode: Mode) -> Tensor:
        w, b = _params(module)
        return R.LinearAlpha1Beta0.apply(x, w, b, mode)

    def norm(self, module: nn.Module, x: Tensor, mode: Mode) -> Tensor:
        return self.identity(x, _original(module), mode)

    def elementwise(self, module: nn.Module, x: Tensor, mode: Mode) -> Tensor:
        return self.identity(x, _original(module), mode)

    def patch_conv(self, module: nn.Module, x: Tensor, mode: Mode) -> Tensor:
        w, b = _params(module)
        return R.ConvZBeta.apply(x, w, b, _conv_kwargs(module), mode)

    # functional operations
    def identity(self, x: Tensor, fn: Callable[[Tensor], Tensor], mode: Mode) -> Tensor:
        """The identity rule for ``fn`` applied elementwise."""
        return R.PassThrough.apply(x, fn, mode)

    def add(self, a: Tensor, b: Tensor, mode: Mode) -> Tensor:
        return R.AddZ.apply(a, b, True, mode)

    def clone(self, x: Tensor, mode: Mode) -> Tensor:
        return R.ZIdentity.apply(x, mode)

    def pool(self, x: Tensor, weights: Tensor, mode: Mode) -> Tensor:
        return R.PoolZ.apply(x, weights.to(x.dtype), mode)

    def fixed_linear(
        self, x: Tensor, fn: Callable[[Tensor], Tensor], mode: Mode
    ) -> Tensor:
        """A fixed (input-independent) linear map without bias, ``fn(x)``:
        the rotary position embedding of ``q`` and ``k``."""
        return R.FixedLinearZ.apply(x, fn, mode)

    def product(self, a: Tensor, b: Tensor, mode: Mode) -> Tensor:
        """The elementwise product of two branches (SwiGLU's gate)."""
        return R.ProductHalf.apply(a, b, mode)

    def qk(self, q: Tensor, k: Tensor, scale: float, mode: Mode) -> Tensor:
        return R.QKHalf.apply(q, k, scale, mode)

    def softmax(self, scores: Tensor, mode: Mode) -> Tensor:
        return self.identity(scores, _softmax, mode)

    def av(self, attn: Tensor, v: Tensor, mode: Mode) -> Tensor:
        return R.AVHalf.apply(attn, v, mode)

    def fused_attention(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        scale: float,
        mask: Optional[Tensor],
        mode: Mode,
        consumer: Optional[R.AttentionConsumer],
    ) -> Optional[Tensor]:
        """The whole attention core with torch's fused kernel in the forward,
        where the rules allow it (None: run it op by op, through :meth:`qk`,
        :meth:`softmax` and :meth:`av`). ``consumer`` receives what arrives at
        the attention probabilities in backward."""
        return R.AttentionHalf.apply(q, k, v, scale, mask, mode, consumer)


class OriginalRules(RuleSet):
    """Chefer et al.'s ``layers_lrp`` rules: separately normalised linear
    terms, plain z-rule Add; everything else as ``layers_ours``."""

    name = "original"

    def linear(self, module: nn.Module, x: Tensor, mode: Mode) -> Tensor:
        w, b = _params(module)
        return R.LinearSeparate.apply(x, w, b, mode)

    def add(self, a: Tensor, b: Tensor, mode: Mode) -> Tensor:
        return R.AddZ.apply(a, b, False, mode)


class AttnLRPRules(RuleSet):
    r"""AttnLRP (Achtibat et al., ICML 2024) as gradient x input, the
    formulation of the LXT project: LRP-:math:`\epsilon` for linear layers,
    sums, pooling and the patch convolution (their plain gradient, times
    :math:`y / \operatorname{stab}_\epsilon(y)` when :math:`\epsilon > 0`); the
    LayerNorm with a constant standard deviation; the identity rule for
    elementwise nonlinearities; the softmax rule (Prop. 3.1, which is the
    softmax's plain gradient x input); the uniform rule (halving) for both
    attention matmuls, or, with ``attention="cp"``, the attention held
    constant (CP-LRP, Ali et al. 2022); the uniform rule for SwiGLU's gated
    product too; LRP-:math:`\epsilon` for the rotary position embedding (a
    fixed linear map without bias: its plain gradient at :math:`\epsilon =
    0`). Relevance starts at the target logit.

    With :math:`\epsilon = 0` and no relevance asked of the attention
    probabilities, the attention core runs in torch's fused kernel with the
    gradients at :math:`q`, :math:`k`, :math:`v` divided by 4, 4 and 2 (the
    two uniform rules), as LXT does.
    """

    name = "attnlrp"
    start_at_logit = True
    gradient_times_input = True

    def __init__(self, epsilon: float = 0.0, attention: str = "attnlrp") -> None:
        self.epsilon = epsilon
        self.attention = attention

    def _eps(self, y: Tensor) -> Tensor:
        return R.Epsilon.apply(y, self.epsilon) if self.epsilon > 0 else y

    def linear(self, module: nn.Module, x: Tensor, mode: Mode) -> Tensor:
        w, b = _params(module)
        return self._eps(F.linear(x, w, b))

    def norm(self, module: nn.Module, x: Tensor, mode: Mode) -> Tensor:
        if isinstance(module, nn.LayerNorm):
            w, b = _params(module)
            y = R.ConstantStdLayerNorm.apply(x, w, b, module.eps)
            return self._eps(y)
        return self.identity(x, _original(module), mode)

    def patch_conv(self, module: nn.Module, x: Tensor, mode: Mode) -> Tensor:
        w, b = _params(module)
        return self._eps(F.conv2d(x, w, b, **_conv_kwargs(module)))

    def identity(self, x: Tensor, fn: Callable[[Tensor], Tensor], mode: Mode) -> Tensor:
        return R.IdentityRule.apply(x, fn)

    def add(self, a: Tensor, b: Tensor, mode: Mode) -> Tensor:
        return self._eps(a + b)

    def clone(self, x: Tensor, mode: Mode) -> Tensor:
        return x

    def pool(self, x: Tensor, weights: Tensor, mode: Mode) -> Tensor:
        return self._eps(torch.einsum("n,bnd->bd", weights.to(x.dtype), x))

    def fixed_linear(
        self, x: Tensor, fn: Callable[[Tensor], Tensor], mode: Mode
    ) -> Tensor:
        return self._eps(fn(x))

    def product(self, a: Tensor, b: Tensor, mode: Mode) -> Tensor:
        # each factor's gradient x input is the whole product: halved, the
        # shares sum to R exactly (no sum runs over the product, no
        # stabiliser is needed)
        a, b = R.UniformRule.apply(a, 2.0), R.UniformRule.apply(b, 2.0)
        return a * b

    def qk(self, q: Tensor, k: Tensor, scale: float, mode: Mode) -> Tensor:
        if self.attention == "cp":
            return (q.detach() * scale) @ k.detach().transpose(-2, -1)
        q, k = R.UniformRule.apply(q, 2.0), R.UniformRule.apply(k, 2.0)
        if self.epsilon > 0:  # the stabiliser on the unscaled product
            return self._eps(q @ k.transpose(-2, -1)) * scale
        return (q * scale) @ k.transpose(-2, -1)

    def softmax(self, scores: Tensor, mode: Mode) -> Tensor:
        return _softmax(scores)

    def av(self, attn: Tensor, v: Tensor, mode: Mode) -> Tensor:
        if self.attention == "cp":
            return self._eps(attn.detach() @ v)
        attn, v = R.UniformRule.apply(attn, 2.0), R.UniformRule.apply(v, 2.0)
        return self._eps(attn @ v)

    def fused_attention(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        scale: float,
        mask: Optional[Tensor],
        mode: Mode,
        consumer: Optional[R.AttentionConsumer],
    ) -> Optional[Tensor]:
        if self.epsilon > 0 or consumer is not None:
            return None
        if self.attention == "cp":
            q, k = q.detach(), k.detach()
        else:
            q, k = R.UniformRule.apply(q, 4.0), R.UniformRule.apply(k, 4.0)
            v = R.UniformRule.apply(v, 2.0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


RULE_SETS: Dict[str, Callable[[], RuleSet]] = {
    "chefer2021": RuleSet,
    "original": OriginalRules,
    "attnlrp": AttnLRPRules,
}


def get_rule_set(rules: Union[str, RuleSet]) -> RuleSet:
    if isinstance(rules, RuleSet):
        return rules
    return RULE_SETS[check_choice("rules", rules, tuple(RULE_SETS))]()


def _softmax(scores: Tensor) -> Tensor:
    return scores.softmax(dim=-1)


def _original(module: nn.Module) -> Callable[[Tensor], Tensor]:
    fwd = type(module).forward
    return lambda t: fwd(module, t)


def _conv_kwargs(m: nn.Module) -> dict:
    # issue 14: SigLIP's patch convolution says padding="valid" (none)
    kernel = cast(Tuple[int, ...], m.kernel_size)
    padding = (0,) * len(kernel) if m.padding == "valid" else m.padding
    if getattr(m, "padding_mode", "zeros") != "zeros" or isinstance(padding, str):
        raise NotImplementedError("only zero-padded convolutions are supported")
    return dict(stride=m.stride, padding=padding, dilation=m.dilation, groups=m.groups)


# ------------------------------------------------------------------- tracer
#: ``reduce(relevance, gradient)`` of one layer's attention; ``gradient`` is
#: ``d y_t / d A`` when the call runs a gradient pass, else None
Reduce = Callable[[Tensor, Optional[Tensor]], Tensor]


class AttentionTap:
    """Collects, for one layer and one call, the relevance arriving at the
    attention probabilities :math:`A` (and, with a gradient pass, the
    gradient of the target logits there), and keeps ``reduce`` of them.

    With the fused attention the gradient pass leaves the gradient at
    :math:`O = A V` (``(B, H, N, d)``, not ``(B, H, N, N)``); the gradient at
    :math:`A`, :math:`g_O V^\top`, is formed when the relevance arrives.
    """

    def __init__(self, reduce: Optional[Reduce] = None) -> None:
        self.reduce = reduce
        self.result: Optional[Tensor] = None
        self._grad_attention: Optional[Tensor] = None
        self._grad_output: Optional[Tensor] = None

    def gradient(
        self, *, attention: Optional[Tensor], output: Optional[Tensor]
    ) -> None:
        self._grad_attention, self._grad_output = attention, output

    def relevance(self, rel: Tensor, v: Optional[Tensor]) -> None:
        grad = self._grad_attention
        if grad is None and self._grad_output is not None and v is not None:
            grad = self._grad_output @ v.transpose(-2, -1)
        self._grad_attention = self._grad_output = None
        rel = rel.detach()
        self.result = rel if self.reduce is None else self.reduce(rel, grad)


class LRPTracer(Tracer):
    """Routes the attention core, the residual sums, the positional sum and
    the pooling through a :class:`RuleSet`, for one call.

    Holds the call's :class:`~._lrp_rules.Mode` (``with tracer.mode.gradient():
    ...``) and an :class:`AttentionTap` per layer in ``taps``. Records nothing
    unless its ``keep_*`` flags are set.
    """

    trace_ends = True

    def __init__(
        self,
        rules: RuleSet,
        mode: Optional[Mode] = None,
        taps: Optional[Dict[int, AttentionTap]] = None,
    ) -> None:
        super().__init__(keep_attention=False)
        self.rules = rules
        self.mode = Mode() if mode is None else mode
        self.taps: Dict[int, AttentionTap] = {} if taps is None else taps
        #: the attention inputs ``(q, k, v)`` of each tapped layer
        self.qkv: Dict[int, Tuple[Tensor, Tensor, Tensor]] = {}
        #: the first layer whose forward needs a graph: the forward entering
        #: it switches gradients on (the caller runs the layers below
        #: without; None: not used)
        self.grad_from: Optional[int] = None

    def attention_inputs(
        self, layer: int, q: Tensor, k: Tensor, v: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        if self.taps.get(layer) is not None:
            self.qkv[layer] = (q, k, v)
        return q, k, v

    def fused_attention(
        self, layer: int, q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Mask
    ) -> Optional[Tensor]:
        if self.score_hook is None and not (
            self.keep_attention or self.keep_scores or self.keep_values
        ):
            tap = self.taps.get(layer)
            out = self.rules.fused_attention(q, k, v, scale, mask, self.mode, tap)
            if out is not None:
                return out
        return super().fused_attention(layer, q, k, v, scale, mask)

    def qk(self, layer: int, q: Tensor, k: Tensor, scale: float) -> Tensor:
        return self.rules.qk(q, k, scale, self.mode)

    def softmax(self, layer: int, scores: Tensor) -> Tensor:
        if scores.dtype in (torch.float16, torch.bfloat16):
            return self.rules.softmax(scores.float(), self.mode).to(scores.dtype)
        return self.rules.softmax(scores, self.mode)

    def av(self, layer: int, attn: Tensor, v: Tensor) -> Tensor:
        tap = self.taps.get(layer)
        if tap is not None:
            gxi = self.rules.gradient_times_input
            attn = R.Tap.apply(attn, tap, self.mode, gxi)
        return self.rules.av(attn, v, self.mode)

    def residual(self, layer: int, index: int, x: Tensor, branch: Tensor) -> Tensor:
        out = self.rules.add(x, branch, self.mode)
        return self.rules.clone(out, self.mode) if index == 0 else out

    def block_input(self, layer: int, x: Tensor) -> Tensor:
        if layer == self.grad_from:  # the graph starts here
            torch.set_grad_enabled(True)
            x = x.detach().requires_grad_(True)
        return super().block_input(layer, self.rules.clone(x, self.mode))

    def embed_add(self, tokens: Tensor, pos: Tensor) -> Tensor:
        return self.rules.add(tokens, pos, self.mode)

    def pool(self, x: Tensor, weights: Tensor) -> Tensor:
        return self.rules.pool(x, weights, self.mode)

    def rotary(self, layer: int, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        return self.rules.fixed_linear(x, fn, self.mode)

    def gate(self, layer: int, gate: Tensor, value: Tensor) -> Tensor:
        return self.rules.product(gate, value, self.mode)

    def merge_heads(self, outputs: Sequence[Tensor]) -> Tensor:
        n = len(outputs)
        parts = [self.rules.identity(o, lambda t: t / n, self.mode) for o in outputs]
        out = parts[0]
        for p in parts[1:]:
            out = self.rules.add(out, p, self.mode)
        return out


# --------------------------------------------------------- applying rules
def _module_rules(
    adapter: ViTAdapter, rules: RuleSet, mode: Mode
) -> List[Tuple[nn.Module, Callable[[Tensor], Tensor]]]:
    """``(module, new forward)`` for every module the adapter lists."""
    out: List[Tuple[nn.Module, Callable[[Tensor], Tensor]]] = []

    def bind(kind: str, module: nn.Module) -> None:
        rule = getattr(rules, kind)

        def forward(x: Tensor) -> Tensor:
            return rule(module, x, mode)

        out.append((module, forward))

    def by_type(module: Optional[nn.Module]) -> None:
        if module is None or _skip(module):
            return
        if _is_linear(module):
            bind("linear", module)
        elif _is_norm(module):
            bind("norm", module)
        else:
            bind("elementwise", module)

    for layer in range(adapter.num_layers):
        parts = adapter.block_parts(layer)
        by_type(parts.norm1)
        by_type(parts.norm2)
        for m in parts.qkv:
            bind("linear", m)
        bind("linear", parts.proj)
        norms = list(getattr(parts, "attention_norms", []))  # Swin v2's cosine
        for m in list(parts.mlp) + list(getattr(parts, "scales", [])) + norms:
            by_type(m)
        for m in getattr(parts, "head_mixing", []):  # CaiT's talking heads
            bind("linear", m)
    for m in adapter.between_parts():  # Swin's patch merging
        by_type(m)
    emb = adapter.embedding_parts()
    bind("patch_conv", emb.patch)
    by_type(emb.norm)
    by_type(emb.post_norm)  # issue 14: CLIP's ln_pre
    head = adapter.head_parts()
    by_type(head.norm)
    by_type(head.fc_norm)
    # issue 14: the modules of an attention-pooling head, by role
    for m in list(head.pooler) + list(head.pre_logits) + list(head.classifiers):
        by_type(m)
    return out


@contextlib.contextmanager
def lrp_context(
    adapter: ViTAdapter,
    rules: RuleSet,
    *,
    gradients: bool = False,
    taps: Optional[Dict[int, AttentionTap]] = None,
) -> Iterator[LRPTracer]:
    """Apply ``rules`` to ``adapter.model`` for the duration of the context.

    The single place where rules are applied to a model. Yields the call's
    :class:`LRPTracer` (which holds the call's :class:`~._lrp_rules.Mode` and
    attention taps; ``rules`` itself is never written, so one rule set can
    serve several threads). The model's lock is held for the whole context
    and every instance-level ``forward`` set here or by the adapter is
    removed on exit (the user's own restored), also when the body raised (see
    :func:`captum_vit.adapters.patching`).

    Args:
        adapter (ViTAdapter): the model's adapter.
        rules (RuleSet): the rules to apply.
        gradients (bool, optional): whether a gradient pass will run
            (``with tracer.mode.gradient(): ...``) before the relevance pass.
            Default: False
        taps (dict, optional): layer -> :class:`AttentionTap` that receives
            what arrives at that layer's attention probabilities. Default:
            None
    """
    mode = Mode(gradients=gradients)
    tracer = LRPTracer(rules, mode, taps)
    with patching(adapter.model) as patch:
        for module, fn in _module_rules(adapter, rules, mode):
            patch.set(module, "forward", fn)
        with adapter.trace(tracer):
            yield tracer


class RelevancePass(NamedTuple):
    """What :func:`relevance_pass` returns."""

    #: the explained targets ``(B,)``
    target: Tensor
    #: the relevance of the inputs (None unless ``wrt_input``)
    inputs: Optional[Tensor]
    #: per layer of ``layers``: the relevance arriving at the post-softmax
    #: attention ``(B, H, N, N)``, or what ``reduce`` made of it
    attention: Dict[int, Tensor]


def relevance_pass(
    adapter: ViTAdapter,
    rules: RuleSet,
    inputs: Tensor,
    target: Optional[Tensor],
    *,
    args: tuple = (),
    wrt_input: bool = True,
    layers: Iterable[int] = (),
    gradients: bool = False,
    reduce: Optional[Reduce] = None,
) -> RelevancePass:
    """One forward with ``rules`` applied, then one relevance pass.

    No parameter gradient is computed or stored: the rules see detached
    parameters and only ``inputs`` (or the attention inputs of the lowest of
    ``layers``) are differentiated.

    Args:
        adapter (ViTAdapter): the model's adapter.
        rules (RuleSet): the rules.
        inputs (Tensor): the images.
        target (Tensor, optional): targets ``(B,)``; None: the predicted class.
        args (tuple, optional): extra forward arguments. Default: ()
        wrt_input (bool, optional): return the relevance of ``inputs``
            (otherwise the pass stops at the lowest layer of ``layers``).
            Default: True
        layers (iterable of int, optional): layers whose attention relevance
            is returned. Default: ()
        gradients (bool, optional): the same forward first serves a gradient
            pass (Chefer et al.'s rule sets only): ``reduce`` receives the
            gradient of the target logits with respect to each layer's
            attention. Default: False
        reduce (callable, optional): ``reduce(relevance, gradient)`` applied
            to each layer's attention relevance as soon as the pass reaches
            it, so that only its result is kept. Default: None (keep the
            relevance)

    Returns:
        RelevancePass: ``(target, inputs, attention)``.
    """
    layers = sorted(set(layers))
    if not wrt_input and not layers:
        raise ValueError("nothing to compute: wrt_input=False and no layers")
    if gradients and rules.gradient_times_input:
        raise ValueError(f"rule set {rules.name!r} has no gradient pass")
    taps = {i: AttentionTap(reduce) for i in layers}
    with (
        torch.enable_grad(),
        lrp_context(adapter, rules, gradients=gradients, taps=taps) as tracer,
    ):
        x = inputs.detach().requires_grad_(wrt_input)
        if wrt_input:
            logits = adapter.forward(x, *args)
        else:  # the layers below the first tapped one need no graph
            tracer.grad_from = layers[0]
            with torch.no_grad():
                logits = adapter.forward(x, *args)
        if target is None:
            target = logits.detach().argmax(dim=-1)
        target = target.to(logits.device)
        one_hot = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
        # the backward passes stop at the lowest tapped layer's q, k, v
        wrt = [x] if wrt_input else list(tracer.qkv[layers[0]])
        if gradients:
            with tracer.mode.gradient():
                torch.autograd.grad(
                    logits, wrt, one_hot, retain_graph=True, allow_unused=True
                )
        start = one_hot
        if rules.start_at_logit and not rules.gradient_times_input:
            start = start * logits.detach()
        grads = torch.autograd.grad(logits, wrt, grad_outputs=start, allow_unused=True)
    rel_x = None
    if wrt_input:
        rel_x = grads[0].detach()
        if rules.gradient_times_input:
            rel_x = rel_x.mul_(x.detach())
    attention = {i: tap.result for i, tap in taps.items() if tap.result is not None}
    return RelevancePass(target, rel_x, attention)


class RelevanceAttribution(ViTAttribution):
    """Base of the methods that run the LRP engine (:func:`relevance_pass`):
    they take gradients through the model, and refuse half precision
    (:data:`~._base.RELEVANCE_IN_HALF`)."""

    _needs_grad = True
    _half_dtypes: Tuple[torch.dtype, ...] = ()
    _half_refusal = RELEVANCE_IN_HALF


class _PixelLRPAttribution(RelevanceAttribution, GraphAttribution):
    """Base of the LRP methods whose natural output is relevance per input
    element ``(B, C, H, W)`` (signed, not normalised; its sum over channels
    is the reference's pixel map); ``output="tokens"`` sums it over channels
    and within each patch. Subclasses implement ``_attribute`` returning the
    input relevance."""

    _attribute_returns = "pixels"
    _token_reduce = "sum"

    #: the rule set, chosen by the subclass's constructor
    rules: RuleSet

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        rel = relevance_pass(self.adapter, self.rules, inputs, target, args=args)
        return cast(Tensor, rel.inputs)  # wrt_input: never None
