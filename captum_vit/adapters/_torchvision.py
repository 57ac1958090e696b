"""Adapter for torchvision's ``VisionTransformer``.

torchvision calls its ``nn.MultiheadAttention`` with ``need_weights=False``,
so the weights are never materialised; the explicit forward
(:func:`~captum_vit.adapters._mha.self_attention_forward`) computes the same
function from ``in_proj_weight`` / ``out_proj`` and exposes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, Tuple

import torch
from torch import Tensor, nn

from ._base import (
    EmbeddingParts,
    HeadParts,
    Tracer,
    UnsupportedModelError,
)
from ._mha import MHAAdapter
from ._parts import chain, check_fixed_size, routed_block

if TYPE_CHECKING:  # torchvision has no type information: these are Any
    from torchvision.models import VisionTransformer
    from torchvision.models.vision_transformer import EncoderBlock


class TorchvisionViTAdapter(MHAAdapter):
    """Adapter for ``torchvision.models.VisionTransformer``."""

    family = "torchvision VisionTransformer"
    _mha = "self_attention"
    num_prefix_tokens = 1
    has_class_token = True
    pooling = "token"

    model: VisionTransformer

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            from torchvision.models import VisionTransformer
        except ImportError:
            return False
        return isinstance(model, VisionTransformer)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        for i, blk in enumerate(self.model.encoder.layers):
            mha = blk.self_attention
            if not mha._qkv_same_embed_dim or not mha.batch_first:
                raise UnsupportedModelError(
                    f"torchvision block {i}: only batch_first attention with a packed "
                    "in_proj_weight is supported"
                )
        self._make_in_proj()

    @property
    def patch_size(self) -> Tuple[int, int]:
        return (self.model.patch_size, self.model.patch_size)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def blocks(self) -> List[nn.Module]:
        return list(self.model.encoder.layers)

    def embedding_parts(self) -> EmbeddingParts:
        return EmbeddingParts(self.model.conv_proj)

    def head_parts(self) -> HeadParts:
        heads = self.model.heads
        pre = [heads.pre_logits, heads.act] if hasattr(heads, "pre_logits") else []
        return HeadParts(self.model.encoder.ln, [heads.head], pre_logits=pre)

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        size = (self.model.image_size, self.model.image_size)
        check_fixed_size(image_size, size, "torchvision model")

    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        blk: EncoderBlock = block

        def forward(input: Tensor) -> Tensor:
            def attend(h: Tensor) -> Tensor:
                return blk.self_attention(h, h, h, need_weights=False)[0]

            norms, branches = (blk.ln_1, blk.ln_2), (blk.dropout, chain())
            return routed_block(layer, tracer, input, attend, blk.mlp, norms, branches)

        return forward

    def _end_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        model, encoder, adapter = self.model, self.model.encoder, self

        def encoder_forward(input: Tensor) -> Tensor:
            # torchvision Encoder.forward, with the positional sum routed
            x = tracer.embed_add(input, encoder.pos_embedding)
            return encoder.ln(encoder.layers(encoder.dropout(x)))

        def model_forward(x: Tensor) -> Tensor:
            # torchvision VisionTransformer.forward, with the pooling routed
            x = model._process_input(x)
            cls = model.class_token.expand(x.shape[0], -1, -1)
            x = encoder(torch.cat([cls, x], dim=1))
            w = adapter._pool_rows(x.new_zeros(x.shape[1]))[0]
            return model.heads(tracer.pool(x, w))

        return [
            (encoder, "forward", encoder_forward),
            (model, "forward", model_forward),
        ]
