"""Attention rollout (Abnar & Zuidema, 2020)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ._base import GraphAttribution, check_head_fusion
from ._graph import MixingTracer, patch_scores
from ._registry import register_method


@register_method("rollout")
class AttentionRollout(GraphAttribution):
    r"""Attention rollout of Abnar & Zuidema (ACL 2020,
    https://arxiv.org/abs/2005.00928), as Chefer et al. (CVPR 2021) compute
    their "rollout" baseline.

    Per layer the heads are fused, the identity is added for the residual
    connection and rows are renormalised; the layers are then multiplied with
    later layers on the left:

    .. math::
        \hat A^{(l)} = \frac{\bar A^{(l)} + I}{\mathrm{rowsum}(\bar A^{(l)} + I)},
        \qquad
        J = \hat A^{(L-1)} \cdots \hat A^{(s+1)} \hat A^{(s)}

    and the map is the class-token row of :math:`J` at the patch columns
    (``s = start_layer``). Because attention rows sum to one,
    :math:`\hat A = (\bar A + I)/2` for ``head_fusion="mean"``; with max/min
    fusion or discarding, the row normalisation matters. Unlike
    jacobgil/vit-explain (its issue #16) nothing is divided by column sums.

    ``discard_ratio`` follows vit-explain: per sample and layer, that fraction
    of the smallest entries of the fused matrix :math:`\bar A` is set to zero
    before the identity is added, never the class-token-to-itself entry.
    The result is class-agnostic: ``target`` is ignored.

    **Windowed and hierarchical models** (Swin; ``docs/token_graph.rst``):
    :math:`\hat A^{(l)}` is block-diagonal over the layer's windows (the
    identity and the row normalisation act inside each window, the shift is
    a permutation of the tokens), patch merging enters the product as its
    row-stochastic merge map :math:`P` (a merged token is the mean of the
    tokens it is made from), and the explained row is the pooling row (the
    mean over the last stage's tokens for average pooling). The product is
    read as a row vector from the pooling row down to the first stage's
    tokens, so the map has the first stage's grid; no dense matrix over all
    tokens is formed. ``discard_ratio`` counts the entries the layer
    computes (inside its windows).

    **Cost.** The layers before ``start_layer`` run torch's fused attention.
    On a plain ViT the product is accumulated during the forward
    (:math:`J \leftarrow \hat A^{(l)} J`), so besides the forward only one
    ``(B, N, N)`` matrix is kept, whatever the depth; on a windowed model
    each layer's fused blocks ``(B, nW, n, n)`` are kept (memory linear in
    the number of windows) and read as a row vector after the forward.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        head_fusion (str, optional): ``"mean"``, ``"max"`` or ``"min"``.
            Default: ``"mean"``
        discard_ratio (float, optional): fraction in ``[0, 1)`` of the
            smallest fused attention weights dropped per layer (with
            ``discard_ratio > 0``, half-precision models are refused: see
            ``docs/performance.rst``, Half precision). Default: 0.0
        start_layer (int, optional): first layer of the product. Default: 0
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> rollout = cv.AttentionRollout(model, head_fusion="max", discard_ratio=0.9)
        >>> attr = rollout.attribute(torch.randn(2, 3, 224, 224), output="tokens")
        >>> attr.shape
        torch.Size([2, 14, 14])
    """

    def __init__(
        self,
        model: nn.Module,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        start_layer: int = 0,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.head_fusion = check_head_fusion(head_fusion)
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
        self.discard_ratio = float(discard_ratio)
        self.start_layer = self._layer_index(start_layer)
        if self.discard_ratio > 0:
            self._half_dtypes = ()
            self._half_refusal = (
                "discard_ratio > 0 zeroes the smallest attention entries, a "
                "ranking that float16 and bfloat16 reorder (docs/performance.rst, "
                "Half precision); discard_ratio=0 explains half-precision models"
            )

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        graph = self._graph(inputs)
        tracer = MixingTracer(
            graph,
            self.head_fusion,
            range(self.start_layer, self.adapter.num_layers),
            self.discard_ratio,
        )
        self._trace(inputs, target, args, tracer)
        return patch_scores(graph, tracer.row())
