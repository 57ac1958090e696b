"""Grad-SAM (Barkan et al., 2021)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ._base import GraphAttribution, check_choice
from ._graph import (
    all_queries_row,
    blocks,
    patch_scores,
    pool_row,
    through_layer,
    to_stage,
)
from ._registry import register_method

_QUERIES = ("class", "all")


@register_method("grad_sam")
class GradSAM(GraphAttribution):
    r"""Gradient Self-Attention Maps of Barkan, Hauon, Caciularu, Katz,
    Malkiel, Armstrong, Koenigstein (CIKM 2021, https://arxiv.org/abs/2204.11073;
    survey eq. 9-11).

    Every layer's attention probabilities are weighted by the positive part of
    the gradient of the target logit with respect to them, and the result is
    averaged over the :math:`L` layers and :math:`H` heads:

    .. math::
        G = \frac{1}{LH} \sum_{l=1}^{L} \sum_{h=1}^{H}
            A^{(l)}_h \odot \mathrm{ReLU}\!\left(
            \frac{\partial y_t}{\partial A^{(l)}_h}\right)

    **Which token axis is reduced.** :math:`G` is a token-to-token matrix
    (rows are queries, columns keys). The map is a function of the key
    (column) axis. With ``query="class"`` (default) it is the class-token row
    :math:`G_{\mathrm{cls},j}`: in a ViT classifier only the class token's
    output reaches the head, so its row is the attention the prediction
    "reads" from each patch, the same choice as every other method of this
    package. With ``query="all"`` the rows are averaged over all queries,
    :math:`\frac{1}{N}\sum_i G_{ij}`, which is the sequence-level reduction
    Barkan et al. use for BERT (a token's score is the gradient-weighted
    attention it receives from every token). Prefix-token columns are dropped.

    **Windowed and hierarchical models** (Swin; ``docs/token_graph.rst``):
    layers of different stages attend over different tokens, so each layer's
    :math:`G^{(l)}` (block-diagonal over its windows) is read on its own, with
    the pooling row pulled back to the layer's stage (``query="class"``) or
    the mean over the stage's tokens (``query="all"``), carried to the first
    stage's grid by the merge maps, and the :math:`L` maps are averaged. On a
    plain ViT this is the formula above.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        query (str, optional): ``"class"`` or ``"all"``, see above.
            Default: ``"class"``
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> attr = cv.GradSAM(model).attribute(torch.randn(1, 3, 224, 224), target=3)
    """

    _needs_grad = True

    def __init__(
        self, model: nn.Module, query: str = "class", interpolate_mode: str = "bilinear"
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.query = check_choice("query", query, _QUERIES)

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        tracer, grads, graph = self._attention_gradients(inputs, target, args)
        B = inputs.shape[0]
        maps = []
        for layer, (a, g) in enumerate(zip(tracer.attention_list(), grads)):
            lw = graph.layers[layer]
            m = blocks(a.detach() * g.clamp(min=0), lw).mean(dim=2)
            if self.query == "all":
                row = all_queries_row(graph, lw, B, m)
            else:
                row = pool_row(graph, lw.stage, B, m.dtype, m.device)
            row = through_layer(row, m, lw, passthrough=False)
            maps.append(to_stage(graph, row, lw.stage))
        return patch_scores(graph, torch.stack(maps).mean(dim=0))
