"""Generic attention explainability (Chefer, Gur, Wolf, ICCV 2021)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ._base import GraphAttribution
from ._graph import blocks, compose, patch_scores, pool_row, window_eye
from ._registry import register_method


@register_method("generic_attention")
class GenericAttention(GraphAttribution):
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

    On windowed and hierarchical models (Swin) :math:`\bar A^{(l)}` is
    block-diagonal over the layer's windows, patch merging enters the product
    as its merge map and the explained row is the pooling row; the product is
    read as a row vector from the pooling row down to the first stage's grid
    (``docs/token_graph.rst``). On a plain ViT this is the formula above.

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

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        tracer, grads, graph = self._attention_gradients(inputs, target, args)
        ops = {}
        for layer, (a, g) in enumerate(zip(tracer.attention_list(), grads)):
            if layer < self.start_layer:
                continue
            lw = graph.layers[layer]
            cam = blocks(g * a.detach(), lw).clamp(min=0).mean(dim=2)
            ops[layer] = cam + window_eye(lw, cam)  # R <- R + cam R
        v = pool_row(
            graph, len(graph.stages) - 1, inputs.shape[0], cam.dtype, cam.device
        )
        return patch_scores(graph, compose(graph, ops, v))
