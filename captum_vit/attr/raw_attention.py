"""Raw attention: the class-token row of one layer's attention."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from torch import Tensor, nn

from ..adapters import Tracer
from ._base import ViTAttribution, check_head_fusion, fuse_heads
from ._registry import register_method


@register_method("raw_attention")
class RawAttention(ViTAttribution):
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
        if head is not None and not 0 <= head < self.adapter.num_heads:
            raise ValueError(
                f"head {head} out of range for {self.adapter.num_heads} heads"
            )
        self.head = head
        self.head_fusion = head_fusion

    def attention_matrix(
        self, inputs: Tensor, additional_forward_args: Any = None
    ) -> Tensor:
        """The attention probabilities of the layer, ``(B, heads, N, N)``.

        All ``N`` tokens, prefix tokens included (rows are queries, columns
        keys), detached: the matrix whose explained row :meth:`attribute`
        reads.

        Args:
            inputs (Tensor): images ``(B, C, H, W)``, checked as by
                :meth:`attribute`.
            additional_forward_args (Any, optional): extra positional
                arguments of the model. Default: None
        """
        inputs, _, _, args = self._prepare(
            inputs, None, additional_forward_args, "tokens"
        )
        return self._attention(inputs, args)[0]

    def _attention(self, inputs: Tensor, args: tuple) -> Tuple[Tensor, Tracer]:
        tracer, _, _, _ = self._trace(inputs, None, args, Tracer(layers=[self.layer]))
        return tracer.attentions[self.layer].detach(), tracer

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        attn, tracer = self._attention(inputs, args)
        if self.head is not None:
            return self._patch_row(attn[:, self.head], tracer)
        if self.head_fusion is None:  # (B, heads, P): one map per head
            B, H, N, _ = attn.shape
            rows = self._patch_row(attn.reshape(B * H, N, N), tracer)
            return rows.reshape(B, H, -1)
        return self._patch_row(fuse_heads(attn, self.head_fusion), tracer)
