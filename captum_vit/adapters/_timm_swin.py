"""Adapter for timm's ``SwinTransformer`` and ``SwinTransformerV2``.

The explicit forwards reproduce ``SwinTransformerBlock.forward`` /
``SwinTransformerV2Block.forward`` (pre-norm v1, residual post-norm v2) and
``WindowAttention.forward`` of both versions (v1: scaled dot product plus the
relative position bias table, fused or not; v2: cosine attention with the
clamped learnt logit scale plus ``16 * sigmoid`` of the continuous position
bias MLP), with the attention core and the residual sums routed through a
:class:`~captum_vit.adapters.Tracer`. The window partition, the cyclic shift
and its mask, and the padding stay the model's own code (``block._attn``).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import BlockParts, EmbeddingParts, HeadParts, Tracer, UnsupportedModelError
from ._parts import block_parts, check_fixed_size, pair
from ._swin import Pair, SwinAdapter


def _classes() -> Optional[Tuple[type, type]]:
    try:
        from timm.models.swin_transformer import SwinTransformer
        from timm.models.swin_transformer_v2 import SwinTransformerV2
    except ImportError:  # pragma: no cover - timm is a hard dependency
        return None
    return SwinTransformer, SwinTransformerV2


def _active(dropout: Any) -> Optional[nn.Module]:
    p = getattr(dropout, "p", 0.0)
    return dropout if dropout.training and p > 0 else None


class _BiasedQKV(nn.Module):
    """timm Swin v2's query/key/value projection as one linear: its ``qkv``
    weight with the separate ``q_bias``, ``k_bias`` (zero) and ``v_bias``
    (references, no copy), so that rules for linear layers see the biases."""

    def __init__(self, attn: Any) -> None:
        super().__init__()
        self.weight = attn.qkv.weight
        self._attn = [attn]  # not a submodule

    @property
    def bias(self) -> Tensor:
        a = self._attn[0]
        return torch.cat((a.q_bias, a.k_bias, a.v_bias))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class TimmSwinAdapter(SwinAdapter):
    """Adapter for ``timm.models.swin_transformer.SwinTransformer`` and
    ``timm.models.swin_transformer_v2.SwinTransformerV2``."""

    family = "timm SwinTransformer / SwinTransformerV2"
    pad_first = False  # timm rolls, then pads to whole windows
    _attend = "_attn"  # the block's window partition, shift and padding

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        classes = _classes()
        return classes is not None and type(model) in classes

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.v2 = type(model).__name__ == "SwinTransformerV2"
        self._number_blocks(stage.blocks for stage in model.layers)
        self._qkv = [
            _BiasedQKV(b.attn) if self.v2 and b.attn.q_bias is not None else b.attn.qkv
            for b in self._blocks
        ]
        attns = [b.attn for b in self._blocks]
        self._make_cosine(
            (a.qkv.in_features // a.num_heads, a.logit_scale) for a in attns
        )
        if model.global_pool != "avg" or isinstance(model.head.fc, nn.Identity):
            raise UnsupportedModelError(
                f"timm Swin with global_pool={model.global_pool!r} and head "
                f"{type(model.head.fc).__name__} is not supported: captum_vit "
                "explains classifiers that average the last stage (global_pool='avg')"
            )

    # ------------------------------------------------------------ description
    @property
    def patch_size(self) -> Pair:
        return pair(self.model.patch_embed.patch_size)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def window_shift(self, layer: int, grid: Pair) -> Tuple[Pair, Pair]:
        blk = self._blocks[layer]
        return pair(blk.window_size), pair(blk.shift_size)

    def block_parts(self, layer: int) -> BlockParts:
        blk = self._blocks[layer]
        qkv, v2 = [self._qkv[layer]], self._v2_roles(layer)
        return block_parts(blk, blk.attn, qkv, blk.attn.proj, **v2)

    def between_parts(self) -> List[nn.Module]:
        out: List[nn.Module] = []
        for stage in self.model.layers:
            if not isinstance(stage.downsample, nn.Identity):
                out += [stage.downsample.norm, stage.downsample.reduction]
        return out

    def embedding_parts(self) -> EmbeddingParts:
        pe = self.model.patch_embed
        norm = None if isinstance(pe.norm, nn.Identity) else pe.norm
        return EmbeddingParts(pe.proj, norm)

    def head_parts(self) -> HeadParts:
        return HeadParts(self.model.norm, [self.model.head.fc])

    def grid_size(self, image_size: Pair) -> Pair:
        pe = self.model.patch_embed
        if getattr(pe, "strict_img_size", True):
            return pair(pe.grid_size)
        return pair(pe.dynamic_feat_size(tuple(image_size)))

    def check_image_size(self, image_size: Pair) -> None:
        pe = self.model.patch_embed
        h, w = image_size
        ph, pw = self.patch_size
        if getattr(pe, "strict_img_size", True):
            hint = (
                "; build it with strict_img_size=False (or dynamic_img_size=True) "
                "for other sizes."
            )
            check_fixed_size(image_size, pair(pe.img_size), "timm model", hint)
            return
        if not getattr(pe, "dynamic_img_pad", False) and (h % ph or w % pw):
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {ph}x{pw}; "
                "crop or resize the images (timm's Swin pads the token grid to whole "
                "windows, not the image to whole patches)."
            )

    # ----------------------------------------------------------------- tracing
    def _attention_forward(
        self, layer: int, attn: Any, tracer: Tracer
    ) -> Callable[..., Any]:
        v2 = self.v2

        def forward(x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
            B_, N, C = x.shape
            qkv = self._qkv[layer](x)  # v2: with the separate q/k/v biases
            qkv = qkv.reshape(B_, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            if v2:  # cosine attention: the logit scale is in the query's norm
                q_norm, k_norm = self._cosine[layer]
                q, k = q_norm(q), k_norm(k)
                scale = 1.0
                table = attn.cpb_mlp(attn.relative_coords_table).view(
                    -1, attn.num_heads
                )
                rpb = table[attn.relative_position_index.view(-1)].view(N, N, -1)
                rpb = 16 * torch.sigmoid(rpb.permute(2, 0, 1).contiguous())[None]
            else:
                scale = attn.scale
                rpb = attn._get_rel_pos_bias()
            o = tracer.attention(
                layer,
                q,
                k,
                v,
                scale,
                mask=self.bias_and_mask(rpb, mask, B_),
                dropout=_active(attn.attn_drop),
            )
            o = o.transpose(1, 2).reshape(B_, N, -1)
            return attn.proj_drop(attn.proj(o))

        return forward

    def _end_forwards(self, tracer: Tracer) -> List[Tuple[Any, str, Any]]:
        head = self.model.head

        def head_forward(x: Tensor, pre_logits: bool = False) -> Tensor:
            # timm ClassifierHead (avg pooling over the NHWC grid), pooling routed
            B, H, W, C = x.shape
            x = x.reshape(B, H * W, C)
            x = tracer.pool(x, self._pool_rows(x.new_zeros(H * W))[0])
            x = head.drop(x)
            if pre_logits:
                return head.flatten(x)
            return head.flatten(head.fc(x))

        return [(head, "forward", head_forward)]
