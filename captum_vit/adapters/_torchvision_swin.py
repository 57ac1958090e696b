"""Adapter for torchvision's ``SwinTransformer`` (``swin_t``/``s``/``b`` and
``swin_v2_t``/``s``/``b``).

torchvision's window attention is one function,
``torchvision.models.swin_transformer.shifted_window_attention``; the explicit
forward below computes the same function (pad to whole windows, then the
cyclic shift, no shift when a window covers the padded grid; v2's cosine
attention and continuous position bias with the key bias zeroed) with the
attention core routed through a :class:`~captum_vit.adapters.Tracer`, and the
blocks' residual sums routed as well.
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import BlockParts, EmbeddingParts, HeadParts, Tracer
from ._parts import block_parts, pair
from ._swin import Pair, SwinAdapter


def _shift_mask(
    pad_H: int, pad_W: int, window: Pair, shift: Pair, like: Tensor
) -> Tensor:
    """torchvision's shift mask ``(nW, n, n)``."""
    mask = like.new_zeros((pad_H, pad_W))
    h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    count = 0
    for h in h_slices:
        for w in w_slices:
            mask[h[0] : h[1], w[0] : w[1]] = count
            count += 1
    nW = (pad_H // window[0]) * (pad_W // window[1])
    mask = mask.view(pad_H // window[0], window[0], pad_W // window[1], window[1])
    mask = mask.permute(0, 2, 1, 3).reshape(nW, window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class TorchvisionSwinAdapter(SwinAdapter):
    """Adapter for ``torchvision.models.SwinTransformer`` (v1 and v2 blocks)."""

    family = "torchvision SwinTransformer (swin_t/s/b, swin_v2_t/s/b)"
    pad_first = True
    _drops = ("stochastic_depth", "stochastic_depth")

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            from torchvision.models import SwinTransformer
        except ImportError:  # pragma: no cover - torchvision is a dependency
            return False
        return isinstance(model, SwinTransformer)

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        from torchvision.models.swin_transformer import SwinTransformerBlockV2

        stages: List[List[Any]] = [[]]
        for part in model.features[1:]:  # after the patch embedding
            if isinstance(part, nn.Sequential):
                stages[-1].extend(part)
            else:  # a patch merging
                stages.append([])
        self._number_blocks(stages)
        self.v2 = isinstance(self._blocks[0], SwinTransformerBlockV2)
        attns = [b.attn for b in self._blocks]
        self._make_cosine(
            (a.qkv.in_features // a.num_heads, a.logit_scale) for a in attns
        )

    # ------------------------------------------------------------ description
    @property
    def patch_size(self) -> Pair:
        return pair(self.model.features[0][0].stride)

    @property
    def num_classes(self) -> int:
        return int(self.model.head.out_features)

    def window_shift(self, layer: int, grid: Pair) -> Tuple[Pair, Pair]:
        attn = self._blocks[layer].attn
        window = pair(attn.window_size)
        padded = [g + (-g) % w for g, w in zip(grid, window)]
        shift = tuple(
            0 if w >= p else s for w, p, s in zip(window, padded, attn.shift_size)
        )
        return window, pair(shift)

    def block_parts(self, layer: int) -> BlockParts:
        blk = self._blocks[layer]
        v2 = self._v2_roles(layer)
        return block_parts(blk, blk.attn, [blk.attn.qkv], blk.attn.proj, **v2)

    def between_parts(self) -> List[nn.Module]:
        out: List[nn.Module] = []
        for part in self.model.features[1:]:
            if not isinstance(part, nn.Sequential):  # a patch merging
                out += [part.norm, part.reduction]
        return out

    def embedding_parts(self) -> EmbeddingParts:
        stem = self.model.features[0]
        return EmbeddingParts(stem[0], stem[2])

    def head_parts(self) -> HeadParts:
        return HeadParts(self.model.norm, [self.model.head])

    def check_image_size(self, image_size: Pair) -> None:
        ph, pw = self.patch_size
        if image_size[0] < ph or image_size[1] < pw:
            raise ValueError(
                f"image size {image_size[0]}x{image_size[1]} is smaller than one "
                f"{ph}x{pw} patch"
            )

    # ----------------------------------------------------------------- tracing
    def _attention_forward(
        self, layer: int, attn: Any, tracer: Tracer
    ) -> Callable[..., Any]:
        v2 = self.v2

        def forward(x: Tensor) -> Tensor:
            # torchvision's shifted_window_attention, the core routed
            B, H, W, C = x.shape
            window, shift = self.window_shift(layer, (H, W))
            x = F.pad(x, (0, 0, 0, (-W) % window[1], 0, (-H) % window[0]))
            _, pad_H, pad_W, _ = x.shape
            if sum(shift) > 0:
                x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
            nW = (pad_H // window[0]) * (pad_W // window[1])
            x = x.view(
                B, pad_H // window[0], window[0], pad_W // window[1], window[1], C
            )
            n = window[0] * window[1]
            x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * nW, n, C)
            qkv = attn.qkv(x)
            if v2 and attn.qkv.bias is not None:  # v2 ignores the key bias
                length = attn.qkv.bias.numel() // 3
                k_bias = attn.qkv.bias[length : 2 * length]
                if bool(k_bias.any()):
                    zero = torch.zeros_like(attn.qkv.bias)
                    qkv = qkv - torch.cat((zero[:length], k_bias, zero[:length]))
            heads = attn.num_heads
            qkv = qkv.reshape(B * nW, n, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            if v2:  # cosine attention: the logit scale is in the query's norm
                q_norm, k_norm = self._cosine[layer]
                q, k = q_norm(q), k_norm(k)
                scale = 1.0
            else:
                scale = (C // heads) ** -0.5
            mask = None
            if sum(shift) > 0:
                mask = _shift_mask(pad_H, pad_W, window, shift, x)
            bias = self.bias_and_mask(attn.get_relative_position_bias(), mask, B * nW)

            def dropout(a: Tensor) -> Tensor:
                return F.dropout(a, p=attn.attention_dropout, training=attn.training)

            active = attn.training and attn.attention_dropout > 0
            o = tracer.attention(
                layer, q, k, v, scale, mask=bias, dropout=dropout if active else None
            )
            o = attn.proj(o.transpose(1, 2).reshape(B * nW, n, C))
            o = F.dropout(o, p=attn.dropout, training=attn.training)
            o = o.view(
                B, pad_H // window[0], pad_W // window[1], window[0], window[1], C
            )
            o = o.permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, C)
            if sum(shift) > 0:
                o = torch.roll(o, shifts=(shift[0], shift[1]), dims=(1, 2))
            return o[:, :H, :W, :].contiguous()

        return forward

    def _end_forwards(self, tracer: Tracer) -> List[Tuple[Any, str, Any]]:
        model = self.model

        def avgpool_forward(x: Tensor) -> Tensor:
            # nn.AdaptiveAvgPool2d(1) on (B, C, H, W), the mean routed
            B, C, H, W = x.shape
            w = self._pool_rows(x.new_zeros(H * W))[0]
            return tracer.pool(x.flatten(2).transpose(1, 2), w)[..., None, None]

        return [(model.avgpool, "forward", avgpool_forward)]
