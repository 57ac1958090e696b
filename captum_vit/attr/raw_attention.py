"""Raw attention: the class-token row of one layer's attention."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from torch import Tensor, nn

from ..adapters import Tracer
from ._base import GraphAttribution, check_head_fusion, fuse_heads
from ._graph import blocks, patch_scores, pool_row, through_layer, to_stage
from ._registry import register_method


@register_method("raw_attention")
class RawAttention(GraphAttribution):
    r"""Raw attention of one layer, read at the class token.

    The map is the attention that the explained token pays to every patch
    token in layer :math:`l`, for one head or fused over heads:

    .. math::
        r_j = \mathrm{fuse}_h\, A^{(l)}_{h,\,\mathrm{cls},\,j}, \qquad
        j \in \text{patch tokens}

    This is the "raw attention" baseline of Chefer et al. (CVPR 2021,
    https://arxiv.org/abs/2012.09838; their ``last_layer_attn`` with the
    default ``layer=-1``). It is class-agnostic: ``target`` is accepted for
    API compatibility and ignored. For distilled DeiT the class and
    distillation rows are averaged (the model averages both heads); for
    average-pooled models (no class token) the row is the mean over patch
    queries. Columns of prefix tokens are dropped and the map is not
    renormalised.

    With ``head_fusion=None`` the heads are kept: one map per head,
    ``(B, heads, gh, gw)`` for ``output="tokens"`` and ``(B, heads, H, W)``
    for ``output="input"`` (each head's map upsampled as a fused map is, but
    not repeated over channels: this is not the input's shape, so Captum's
    metrics do not take it; use ``head`` or a fusion for those).
    :meth:`attention_matrix` returns the whole matrix the row is read from.

    **Windowed and hierarchical models** (Swin; ``docs/token_graph.rst``):
    the layer's attention is block-diagonal over its windows; the explained
    row is the pooling row pulled back to the layer's stage through the merge
    maps (for average pooling, the mean over the stage's tokens) and the
    row, a map over that stage's tokens, is carried to the first stage's grid
    by the merge maps (a merged token's score is shared equally by the
    tokens it was made from). ``head`` counts the heads of the chosen layer.

    Args:
        model (torch.nn.Module): a stock Vision Transformer (timm, Hugging
            Face ``transformers`` or torchvision) or an adapter.
        layer (int, optional): the block whose attention is read; negative
            values count from the end. Default: -1
        head (int, optional): a single head to read; ``None`` reads all heads
            (see ``head_fusion``). Default: None
        head_fusion (str, optional): ``"mean"``, ``"max"`` or ``"min"`` over
            heads when ``head`` is None; ``None`` keeps one map per head.
            Default: ``"mean"``
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> attr = cv.RawAttention(model).attribute(torch.randn(1, 3, 224, 224))
        >>> per_head = cv.RawAttention(model, layer=0, head_fusion=None)
        >>> per_head.attribute(torch.randn(1, 3, 224, 224), output="tokens").shape
        torch.Size([1, 3, 14, 14])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: int = -1,
        head: Optional[int] = None,
        head_fusion: Optional[str] = "mean",
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        if head_fusion is not None:
            check_head_fusion(head_fusion)
        self.layer = self._layer_index(layer)
        heads = self.adapter.layer_heads(self.layer)
        if head is not None and not 0 <= head < heads:
            raise ValueError(f"head {head} out of range for {heads} heads")
        self.head = head
        self.head_fusion = head_fusion

    def attention_matrix(
        self, inputs: Tensor, additional_forward_args: Any = None
    ) -> Tensor:
        """The attention probabilities of the layer, ``(B, heads, N, N)``.

        All ``N`` tokens, prefix tokens included (rows are queries, columns
        keys), detached: the matrix whose explained row :meth:`attribute`
        reads. For a windowed layer, the blocks of its windows as the model
        computes them, ``(B, nW, heads, n, n)``; the adapter's
        :meth:`~captum_vit.adapters.ViTAdapter.token_graph` says which token
        each window position holds.

        Args:
            inputs (Tensor): images ``(B, C, H, W)``, checked as by
                :meth:`attribute`.
            additional_forward_args (Any, optional): extra positional
                arguments of the model. Default: None
        """
        inputs, _, _, args = self._prepare(
            inputs, None, additional_forward_args, "tokens"
        )
        attn, _ = self._attention(inputs, args)
        attn = blocks(attn, self._graph(inputs).layers[self.layer])
        return attn[:, 0] if self.adapter.plain else attn

    def _attention(self, inputs: Tensor, args: tuple) -> Tuple[Tensor, Tracer]:
        tracer, _, _, _ = self._trace(inputs, None, args, Tracer(layers=[self.layer]))
        return tracer.attentions[self.layer].detach(), tracer

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        attn, tracer = self._attention(inputs, args)
        graph = self._graph(inputs, tracer)  # attention pooling: its recorded row
        lw = graph.layers[self.layer]
        attn = blocks(attn, lw)  # (B, nW, H, n, n)
        B, nW, H = attn.shape[:3]
        per_head = self.head is None and self.head_fusion is None
        if self.head is not None:
            mats = attn[:, :, self.head]
        elif self.head_fusion is not None:
            mats = fuse_heads(attn, self.head_fusion, dim=2)
        else:  # one map per head: heads join the batch of rows
            mats = attn.transpose(1, 2).reshape(B * H, nW, *attn.shape[3:])
        row = pool_row(graph, lw.stage, mats.shape[0], mats.dtype, mats.device)
        row = through_layer(row, mats, lw, passthrough=False)
        scores = patch_scores(graph, to_stage(graph, row, lw.stage))
        return scores.reshape(B, H, -1) if per_head else scores
