"""Generic attention explainability (Chefer, Gur, Wolf, ICCV 2021)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import ViTAttribution
from ._registry import register_method


@register_method("generic_attention")
class GenericAttention(ViTAttribution):
    r"""Generic Attention-model Explainability of Chefer, Gur and Wolf
    (ICCV 2021, https://arxiv.org/abs/2103.15679), self-attention rule.

    Starting from the identity (each token explains itself), every layer
    :math:`l \ge s` adds its gradient-weighted attention applied to the
    relevance so far:

    .. math::
        \bar A^{(l)} = \mathbb{E}_h\!\left[\left(\nabla A^{(l)}_h \odot
            A^{(l)}_h\right)^{+}\right], \qquad
        R \leftarrow R + \bar A^{(l)} R, \qquad R^{(0)} = I

    with :math:`\nabla A = \partial y_t / \partial A` the gradient of the
    target **logit** with respect to the post-softmax probabilities (as in the
    authors' code). The map is the class-token row of :math:`R` at the patch
    columns. ``start_layer`` skips the first layers, as the authors' ViT code
    allows.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        start_layer (int, optional): first layer accumulated. Default: 0
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> attr = cv.GenericAttention(model).attribute(torch.randn(1, 3, 224, 224))
    """

    _needs_grad = True

    def __init__(
        self, model: nn.Module, start_layer: int = 0, interpolate_mode: str = "bilinear"
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.start_layer = self._layer_index(start_layer)

    def _attribute(self, inputs: Tensor, target, args: tuple) -> Tensor:
        tracer, _, _, grads = self._trace(inputs, target, args, grad=True)
        attns = tracer.attention_list()
        B, _, N, _ = attns[0].shape
        R = torch.eye(N, dtype=attns[0].dtype, device=attns[0].device).expand(B, N, N)
        for a, g in list(zip(attns, grads))[self.start_layer :]:
            cam = (g * a.detach()).clamp(min=0).mean(dim=1)
            R = R + cam @ R
        return self._patch_row(R, tracer)
