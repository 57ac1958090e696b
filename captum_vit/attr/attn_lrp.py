"""AttnLRP (Achtibat et al., ICML 2024) on stock Vision Transformers."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ._lrp import AttnLRPRules, _PixelLRPAttribution
from ._registry import register_method


@register_method("attn_lrp")
class AttnLRP(_PixelLRPAttribution):
    r"""Attention-aware LRP of Achtibat, Hatefi, Dreyer, Jain, Wiegand,
    Lapuschkin and Samek, "AttnLRP: Attention-Aware Layer-Wise Relevance
    Propagation for Transformers", ICML 2024
    (https://arxiv.org/abs/2402.05602; public code: the LXT project).

    Relevance starts at the target logit, :math:`R = y_t\,e_t`, and is
    propagated to the input with the paper's rules:

    * softmax (Prop. 3.1): :math:`R_{x_i} = x_i\,(R_i - s_i \sum_j R_j)`;
    * both attention matmuls (uniform rule, eq. 7): the
      :math:`\epsilon`-z-rule of the product, half of the relevance to each
      factor, e.g. :math:`R_A = \tfrac12 A \odot (\frac{R}{\operatorname{stab}
      (AV)} V^\top)`;
    * LayerNorm: the standard deviation held constant, then LRP-:math:`\epsilon`
      on the remaining linear map (the identity rule on the normalisation);
    * elementwise nonlinearities (GELU): identity rule (eq. 9);
    * linear layers, the patch convolution, the residual and
      positional-embedding sums and the pooling: LRP-:math:`\epsilon`
      (biases absorb their share).

    **How it is computed.** As in the LXT project, every rule is written as a
    modified gradient (:math:`R_t = t \odot g_t` at every tensor :math:`t`):
    with :math:`\epsilon = 0` the linear rules, the sums and the softmax rule
    are the plain gradient, the identity rule replaces the GELU's derivative
    by :math:`y/x`, the LayerNorm's standard deviation is detached and the
    uniform rules divide the gradients at :math:`q, k, v` by 4, 4 and 2. One
    ordinary backward pass through the model with its fused attention, with
    no parameter gradient, gives the relevance :math:`x \odot g_x`.
    :math:`\epsilon > 0` multiplies the gradient after each of those
    operations by :math:`y / \operatorname{stab}_\epsilon(y)` (and runs the
    attention op by op): the paper's stabiliser, at the cost of keeping each
    output.

    Choices where the paper leaves room: :math:`\epsilon = 0` by default,
    as in LXT (the stabiliser changes maps by less than 1% of their scale
    here); the patch convolution uses LRP-:math:`\epsilon` (LXT's ViT example
    tunes a :math:`\gamma` rule there); relevance given to the positional
    embedding and the prefix tokens is not part of the map. Conservation:
    every rule except the softmax and the bias terms conserves relevance, so
    with zero biases the total over the input, the positional embedding and
    the prefix tokens equals :math:`y_t` minus what the softmax rules absorb
    (tested).

    **Half precision.** With :math:`\epsilon = 0` (either ``attention``),
    float16 and bfloat16 models (and autocast regions) are explained: the
    softmax and its rule run in float32, the relevance pass is the half
    model's own backward, and the map is returned in float32. It stays
    within the documented tolerance of the float32 map (random ViT-S/16,
    bfloat16: 1.5e-2 of the map's scale, correlation 0.9999;
    ``docs/performance.rst``, Half precision). :math:`\epsilon > 0` refuses
    them: its stabiliser, applied after every operation in the model's
    dtype, leaves the tolerance in bfloat16 (5e-2 to 1e-1 of the scale on
    the tiny test models).

    The output is the signed relevance of every input element
    ``(B, C, H, W)``; ``output="tokens"`` sums it over channels and within
    each patch, ``(B, gh, gw)``.

    Args:
        model (torch.nn.Module): a stock timm, Hugging Face or torchvision
            Vision Transformer, or an adapter wrapping one.
        epsilon (float, optional): the stabiliser of the
            LRP-:math:`\epsilon` rules; 0 for none (LXT's choice, the
            fastest). Default: 0.0
        attention (str, optional): ``"attnlrp"`` for the paper's softmax and
            uniform matmul rules; ``"cp"`` for CP-LRP inside the attention
            (Ali et al. 2022: attention probabilities held constant, all
            relevance of :math:`AV` to :math:`V`), the variant LXT's
            torchvision ViT example uses. Default: ``"attnlrp"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> rel = cv.AttnLRP(model).attribute(torch.randn(2, 3, 224, 224), target=3)
        >>> rel.shape
        torch.Size([2, 3, 224, 224])
    """

    # the one relevance method within the half-precision tolerance
    # (RelevanceAttribution refuses half precision)
    _half_dtypes: Tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
    _half_refusal = ""

    def __init__(
        self, model: nn.Module, epsilon: float = 0.0, attention: str = "attnlrp"
    ) -> None:
        super().__init__(model)
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        if attention not in ("attnlrp", "cp"):
            raise ValueError(f"attention must be 'attnlrp' or 'cp', got {attention!r}")
        self.rules = AttnLRPRules(epsilon, attention)
        if epsilon > 0:
            self._half_dtypes = ()
            self._half_refusal = (
                "epsilon > 0 multiplies the relevance after every operation by "
                "y / (y + epsilon sign(y)), computed in the model's dtype, which "
                "takes bfloat16 maps out of the tolerance (docs/performance.rst, "
                "Half precision); epsilon=0 explains half-precision models"
            )
