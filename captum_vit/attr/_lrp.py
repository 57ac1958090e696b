"""The LRP engine: rule sets applied to a stock model, without rewriting it.

A :class:`RuleSet` says which rule of :mod:`._lrp_rules` each operation
gets. :func:`lrp_context` applies a rule set to the model an adapter wraps:

* the functional operations (the two attention matmuls, the softmax, the
  residual sums, the positional-embedding sum and the pooling) are routed
  through an :class:`LRPTracer` by :meth:`ViTAdapter.trace`;
* the modules the adapter lists (:meth:`~ViTAdapter.block_parts`,
  :meth:`~ViTAdapter.embedding_parts`, :meth:`~ViTAdapter.head_parts`) get an
  instance-level ``forward`` that calls the rule, like zennit's canonizers.

On exit, also when the body raised, every instance ``forward`` that was set
is deleted again (or the user's own restored). No class is touched, no
attribute is written onto a user module, no weight is changed.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..adapters import Tracer, ViTAdapter, patching
from . import _lrp_rules as R
from ._base import ViTAttribution

__all__ = ["RuleSet", "RULE_SETS", "LRPTracer", "lrp_context", "relevance_pass"]


# ----------------------------------------------------------------- rule sets
def _is_linear(m: nn.Module) -> bool:
    w = getattr(m, "weight", None)
    return isinstance(w, Tensor) and w.dim() == 2 and not _is_norm(m)


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.LayerNorm, nn.GroupNorm)) or hasattr(m, "normalized_shape")


def _skip(m: Optional[nn.Module]) -> bool:
    return m is None or isinstance(m, (nn.Identity, nn.Dropout))


class RuleSet:
    """Which rule each operation of a ViT gets; subclasses pick the rules.

    The defaults are Chefer et al.'s ``layers_ours`` rules (``"chefer2021"``).
    """

    name = "chefer2021"
    #: relevance at the logits starts at one (Chefer) or the logit (AttnLRP)
    start_at_logit = False
    #: the :class:`~._lrp_rules.Mode` of one pass, shared by every rule it
    #: creates; set only on the per-call copy that :func:`lrp_context` makes
    mode = None

    # modules
    def linear(self, module: nn.Module, x: Tensor) -> Tensor:
        return R.LinearAlpha1Beta0.apply(x, module.weight, module.bias, self.mode)

    def norm(self, module: nn.Module, x: Tensor) -> Tensor:
        return R.PassThrough.apply(x, _original(module), self.mode)

    def elementwise(self, module: nn.Module, x: Tensor) -> Tensor:
        return R.PassThrough.apply(x, _original(module), self.mode)

    def patch_conv(self, module: nn.Module, x: Tensor) -> Tensor:
        return R.ConvZBeta.apply(
            x, module.weight, module.bias, _conv_kwargs(module), self.mode
        )

    # functional operations
    def add(self, a: Tensor, b: Tensor) -> Tensor:
        return R.AddZ.apply(a, b, True, self.mode)

    def clone(self, x: Tensor) -> Tensor:
        return R.ZIdentity.apply(x, self.mode)

    def pool(self, x: Tensor, weights: Tensor) -> Tensor:
        return R.PoolZ.apply(x, weights.to(x.dtype), 0.0, self.mode)

    def qk(self, q: Tensor, k: Tensor, scale: float) -> Tensor:
        return R.QKHalf.apply(q, k, scale, 0.0, self.mode)

    def softmax(self, scores: Tensor) -> Tensor:
        return R.SoftmaxPass.apply(scores, self.mode)

    def av(self, attn: Tensor, v: Tensor) -> Tensor:
        return R.AVHalf.apply(attn, v, 0.0, self.mode)


class OriginalRules(RuleSet):
    """Chefer et al.'s ``layers_lrp`` rules: separately normalised linear
    terms, plain z-rule Add; everything else as ``layers_ours``."""

    name = "original"

    def linear(self, module, x):
        return R.LinearSeparate.apply(x, module.weight, module.bias, self.mode)

    def add(self, a, b):
        return R.AddZ.apply(a, b, False, self.mode)


class AttnLRPRules(RuleSet):
    """AttnLRP (Achtibat et al., ICML 2024): LRP-epsilon for linear layers,
    sums, pooling and the patch convolution; the LayerNorm rule with a
    constant standard deviation; the identity rule for elementwise
    nonlinearities; the softmax rule; the uniform (halving) rule for both
    attention matmuls. Relevance starts at the target logit."""

    name = "attnlrp"
    start_at_logit = True

    def __init__(self, epsilon: float = 1e-6, attention: str = "attnlrp") -> None:
        self.epsilon = epsilon
        self.attention = attention

    def linear(self, module, x):
        return R.LinearEpsilon.apply(
            x, module.weight, module.bias, self.epsilon, self.mode
        )

    def norm(self, module, x):
        if isinstance(module, nn.LayerNorm):
            return R.NormEpsilon.apply(
                x, module.weight, module.bias, module.eps, self.epsilon, self.mode
            )
        return R.PassThrough.apply(x, _original(module), self.mode)

    def patch_conv(self, module, x):
        return R.ConvEpsilon.apply(
            x, module.weight, module.bias, _conv_kwargs(module), self.epsilon, self.mode
        )

    def add(self, a, b):
        return R.AddEpsilon.apply(a, b, self.epsilon, self.mode)

    def clone(self, x):
        return x

    def pool(self, x, weights):
        return R.PoolZ.apply(x, weights.to(x.dtype), self.epsilon, self.mode)

    def qk(self, q, k, scale):
        return R.QKHalf.apply(q, k, scale, self.epsilon, self.mode)

    def softmax(self, scores):
        return R.SoftmaxAttnLRP.apply(scores, self.mode)

    def av(self, attn, v):
        if self.attention == "cp":
            return R.AVConstAttention.apply(attn, v, self.epsilon, self.mode)
        return R.AVHalf.apply(attn, v, self.epsilon, self.mode)


RULE_SETS: Dict[str, Callable[[], RuleSet]] = {
    "chefer2021": RuleSet,
    "original": OriginalRules,
    "attnlrp": AttnLRPRules,
}


def get_rule_set(rules) -> RuleSet:
    if isinstance(rules, RuleSet):
        return rules
    if rules not in RULE_SETS:
        raise ValueError(f"rules must be one of {tuple(RULE_SETS)}, got {rules!r}")
    return RULE_SETS[rules]()


def _original(module: nn.Module) -> Callable[[Tensor], Tensor]:
    fwd = type(module).forward
    return lambda t: fwd(module, t)


def _conv_kwargs(m: nn.Module) -> dict:
    # issue 14: SigLIP's patch convolution says padding="valid" (none)
    padding = (0,) * len(m.kernel_size) if m.padding == "valid" else m.padding
    if getattr(m, "padding_mode", "zeros") != "zeros" or isinstance(padding, str):
        raise NotImplementedError("only zero-padded convolutions are supported")
    return dict(stride=m.stride, padding=padding, dilation=m.dilation, groups=m.groups)


# ------------------------------------------------------------------- tracer
class LRPTracer(Tracer):
    """Routes the attention core, the residual sums, the positional sum and
    the pooling through a :class:`RuleSet`; records the attention
    probabilities (whose "gradient" after the relevance pass is the relevance
    arriving at them)."""

    trace_ends = True

    def __init__(self, rules: RuleSet) -> None:
        super().__init__(keep_attention=True)
        self.rules = rules

    def qk(self, layer, q, k, scale):
        return self.rules.qk(q, k, scale)

    def softmax(self, layer, scores):
        if scores.dtype in (torch.float16, torch.bfloat16):
            return self.rules.softmax(scores.float()).to(scores.dtype)
        return self.rules.softmax(scores)

    def av(self, layer, attn, v):
        return self.rules.av(attn, v)

    def residual(self, layer, index, x, branch):
        out = self.rules.add(x, branch)
        return self.rules.clone(out) if index == 0 else out

    def block_input(self, layer, x):
        return super().block_input(layer, self.rules.clone(x))

    def embed_add(self, tokens, pos):
        return self.rules.add(tokens, pos)

    def pool(self, x, weights):
        return self.rules.pool(x, weights)

    def merge_heads(self, outputs):
        n = len(outputs)
        halves = [
            R.PassThrough.apply(o, lambda t: t / n, self.rules.mode) for o in outputs
        ]
        out = halves[0]
        for h in halves[1:]:
            out = self.rules.add(out, h)
        return out


# --------------------------------------------------------- applying rules
def _module_rules(
    adapter: ViTAdapter, rules: RuleSet
) -> List[Tuple[nn.Module, Callable]]:
    """``(module, new forward)`` for every module the adapter lists."""
    out: List[Tuple[nn.Module, Callable]] = []

    def bind(kind: str, module: nn.Module) -> None:
        fn = getattr(rules, kind)
        out.append((module, lambda x, _m=module, _f=fn: _f(_m, x)))

    def by_type(module: Optional[nn.Module]) -> None:
        if _skip(module):
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
def lrp_context(adapter: ViTAdapter, rules: RuleSet) -> Iterator[LRPTracer]:
    """Apply ``rules`` to ``adapter.model`` for the duration of the context.

    Yields the :class:`LRPTracer` that records attention probabilities; its
    ``rules`` are a per-call copy of ``rules`` carrying this pass's
    :class:`~._lrp_rules.Mode` (``rules`` itself is never written, so one
    rule set can serve several threads). The model's lock is held for the
    whole context and every instance-level ``forward`` set here or by the
    adapter is removed on exit (the user's own restored), also when the body
    raised (see :func:`captum_vit.adapters.patching`).
    """
    rules = copy.copy(rules)
    rules.mode = R.Mode()
    tracer = LRPTracer(rules)
    with patching(adapter.model) as patch:
        for module, fn in _module_rules(adapter, rules):
            patch.set(module, "forward", fn)
        with adapter.trace(tracer):
            yield tracer


def relevance_pass(
    adapter: ViTAdapter,
    rules: RuleSet,
    inputs: Tensor,
    target: Optional[Tensor],
    args: tuple = (),
    wrt_input: bool = True,
    wrt_attention: Sequence[int] = (),
    attention_gradients: bool = False,
) -> Tuple[Tensor, Optional[Tensor], Dict[int, Tensor], Dict[int, Tensor]]:
    """One forward with ``rules`` applied, then one relevance pass.

    With ``attention_gradients``, the same forward first serves a gradient
    pass (the rules switched to ordinary gradients): the gradients of the
    target logits with respect to the attention of the layers in
    ``wrt_attention`` are returned in place of the attention itself.

    Returns:
        ``(target, input_relevance, attention_relevance, attention)``:
        the resolved targets ``(B,)``, the relevance of ``inputs`` (or None),
        the relevance arriving at the post-softmax attention of each layer in
        ``wrt_attention`` ``(B, H, N, N)`` and the attention itself (or its
        gradient).
    """
    with torch.enable_grad(), lrp_context(adapter, rules) as tracer:
        rules = tracer.rules  # this pass's copy, with its own mode
        x = inputs.detach().requires_grad_(True)
        logits = adapter.forward(x, *args)
        if target is None:
            target = logits.detach().argmax(dim=-1)
        target = target.to(logits.device)
        start = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
        if rules.start_at_logit:
            start = start * logits.detach()
        layers = list(wrt_attention)
        attns = [tracer.attentions[i] for i in layers]
        if attention_gradients:
            one_hot = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
            rules.mode.gradient = True
            g = torch.autograd.grad(logits, attns, one_hot, retain_graph=True)
            rules.mode.gradient = False
            second = {i: t.detach() for i, t in zip(layers, g)}
        else:
            second = {i: t.detach() for i, t in zip(layers, attns)}
        wrt = ([x] if wrt_input else []) + attns
        grads = torch.autograd.grad(logits, wrt, grad_outputs=start)
    rel_x = grads[0].detach() if wrt_input else None
    rel_a = {i: g.detach() for i, g in zip(layers, grads[int(wrt_input) :])}
    return target, rel_x, rel_a, second


class _PixelLRPAttribution(ViTAttribution):
    """Base of the LRP methods whose natural output is relevance per input
    element ``(B, C, H, W)`` (signed, not normalised; its sum over channels
    is the reference's pixel map); ``output="tokens"`` sums it over channels
    and within each patch. Subclasses implement ``_attribute`` returning the
    input relevance."""

    _needs_grad = True
    _attribute_returns = "pixels"
    _token_reduce = "sum"
    _any_graph = True  # relevance through windows, shifts and merging
    _class_attention = True  # and through both phases of CaiT

