"""Transition attention maps (Yuan et al., 2021)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..adapters import Tracer
from ._base import ViTAttribution
from ._registry import register_method

__all__ = ["TAM"]


def integrated_attention_gradient(
    method: ViTAttribution, inputs: Tensor, target: Tensor, args: tuple, steps: int
) -> Tensor:
    r"""Integrated gradient of the target logits w.r.t. the last attention map.

    .. math::
        \bar\nabla A^{(L)} = \frac{1}{m} \sum_{k=0}^{m-1}
            \frac{\partial y_t(\alpha_k x)}{\partial A^{(L)}(\alpha_k x)},
        \qquad \alpha_k = \frac{k}{m - 1}

    (a zero baseline and ``numpy.linspace(0, 1, m)``, endpoints included, as
    in Yuan et al.'s and Chen et al.'s code). One batched forward and a
    backward as far as the last block per step.

    Returns:
        Tensor: ``(B, heads, N, N)``.
    """
    last = method.adapter.num_layers - 1
    x = inputs.detach()
    total: Optional[Tensor] = None
    for alpha in np.linspace(0.0, 1.0, steps):
        tracer = Tracer(layers=[last])  # other layers run fused attention
        with torch.enable_grad():
            with method.adapter.trace(tracer):
                scaled = (x * float(alpha)).requires_grad_(True)
                logits = method.adapter.forward(scaled, *args)
            score = logits.gather(1, target[:, None].to(logits.device)).sum()
            (grad,) = torch.autograd.grad(score, tracer.attentions[last])
        total = grad if total is None else total + grad
    assert total is not None  # steps >= 1
    return total / steps


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return steps


@register_method("tam")
class TAM(ViTAttribution):
    r"""Transition attention maps of Yuan, Li, Ji and Hu, "Explaining
    Information Flow Inside Vision Transformers Using Markov Chain" (NeurIPS
    2021 XAI4Debugging workshop, https://openreview.net/forum?id=TT-cf6QSDaQ).

    The head-averaged attention maps :math:`\bar A^{(l)}` are read as the
    transition matrices of a Markov chain over tokens whose residual path
    keeps the previous state. The state starts at the class-token row of the
    last layer and walks down to ``start_layer`` :math:`s`, and is then
    weighted by the positive part of the head-averaged integrated gradient of
    the target logit with respect to the last attention map:

    .. math::
        x^{(L-1)} = e_{\mathrm{cls}}^\top \bar A^{(L-1)}, \qquad
        x^{(l)} = x^{(l+1)} \left(\bar A^{(l)} + I\right)
            \quad (l = L-2, \dots, s),

    .. math::
        \phi = x^{(s)} \odot e_{\mathrm{cls}}^\top
            \mathbb{E}_h\!\left[\left(\frac{1}{m}\sum_{k=0}^{m-1}
            \frac{\partial y_t(\tfrac{k}{m-1} x)}{\partial A^{(L-1)}_h}
            \right)^{+}\right]

    read at the patch columns (layers are 0-indexed, :math:`L` blocks).

    Choices, following the authors' code (github XianrenYty/
    Transition_Attention_Maps, ``transition_attention_maps``) and InterpretDL's
    ``TAMInterpreter``: heads are averaged; the state is not renormalised
    (no division by 2 for the residual); the recurrence runs from layer
    ``L - 2`` down to ``start_layer`` inclusive, so ``start_layer >= L - 1``
    keeps only the last layer's row; the integrated gradient uses a zero
    baseline, ``steps`` points of ``linspace(0, 1, steps)`` (both ends
    included) and the gradient of the target **logit** (as the authors;
    InterpretDL differentiates the softmax probability), averaged over steps
    before the positive part is taken. Unlike both references, samples are
    explained in one batch (the references assume one image) and
    ``start_layer`` defaults to a third of the depth (4 for 12 blocks, the
    references' fixed default). For average-pooled models the class-token
    row :math:`e_{\mathrm{cls}}^\top` becomes the uniform average over patch
    rows (the adapter's pooling weights), as InterpretDL does for
    global-pool models. Run on the same weights (a 4-block random ViT, CPU,
    float32), the authors' ``transition_attention_maps`` and this class gave
    identical maps for every ``start_layer``.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        start_layer (int, optional): lowest layer of the transition chain;
            ``None`` is ``num_layers // 3``. Default: None
        steps (int, optional): points of the integrated gradient. Default: 20
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_small_patch16_224").eval()
        >>> tam = cv.TAM(model, steps=10)
        >>> attr = tam.attribute(torch.randn(2, 3, 224, 224), target=[1, 2])
        >>> attr.shape
        torch.Size([2, 3, 224, 224])
    """

    _no_class_attention = (
        "TAM walks the class token's attention row down through every layer "
        "as a Markov chain over one token set, with each head-averaged "
        "attention as a transition matrix; CaiT's self-attention layers have "
        "no class token and their talking-heads attention (a linear mix of "
        "the heads' softmaxes) is not row-stochastic, so it is no transition "
        "matrix"
    )

    _needs_grad = True

    def __init__(
        self,
        model: nn.Module,
        start_layer: Optional[int] = None,
        steps: int = 20,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.start_layer = self._layer_index(start_layer, self.adapter.num_layers // 3)
        self.steps = check_steps(steps)

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        L = self.adapter.num_layers
        tracer = Tracer(layers=range(self.start_layer, L))
        tracer, _, target, _ = self._trace(inputs, target, args, tracer=tracer)
        fused = {i: a.detach().mean(dim=1) for i, a in tracer.attentions.items()}
        last = fused[L - 1]
        w = self._pool_rows(tracer, last)  # (B, N); attention pooling: per sample
        state = torch.einsum("bn,bnm->bm", w, last)
        for layer in range(L - 2, self.start_layer - 1, -1):
            state = torch.einsum("bn,bnm->bm", state, fused[layer]) + state
        grad = integrated_attention_gradient(self, inputs, target, args, self.steps)
        weight = torch.einsum("bn,bnm->bm", w, grad.clamp(min=0).mean(dim=1))
        return (state * weight)[:, self.adapter.num_prefix_tokens :]
