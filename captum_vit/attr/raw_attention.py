"""Raw attention: the class-token row of one layer's attention."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ..adapters import Tracer
from ._base import ViTAttribution, check_head_fusion, fuse_heads


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

    Args:
        model (torch.nn.Module): a stock Vision Transformer (timm, Hugging
            Face ``transformers`` or torchvision) or an adapter.
        layer (int, optional): the block whose attention is read; negative
            values count from the end. Default: -1
        head (int, optional): a single head to read; ``None`` fuses all heads.
            Default: None
        head_fusion (str, optional): ``"mean"``, ``"max"`` or ``"min"`` over
            heads when ``head`` is None. Default: ``"mean"``
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> attr = cv.RawAttention(model).attribute(torch.randn(1, 3, 224, 224))
    """

    def __init__(
        self,
        model: nn.Module,
        layer: int = -1,
        head: Optional[int] = None,
        head_fusion: str = "mean",
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        check_head_fusion(head_fusion)
        self.layer = self._layer_index(layer)
        if head is not None and not 0 <= head < self.adapter.num_heads:
            raise ValueError(
                f"head {head} out of range for {self.adapter.num_heads} heads"
            )
        self.head = head
        self.head_fusion = head_fusion

    def _attribute(self, inputs: Tensor, target, args: tuple) -> Tensor:
        tracer, _, _, _ = self._trace(inputs, target, args, Tracer(layers=[self.layer]))
        attn = tracer.attentions[self.layer].detach()
        if self.head is not None:
            fused = attn[:, self.head]
        else:
            fused = fuse_heads(attn, self.head_fusion)
        return self._patch_row(fused)
