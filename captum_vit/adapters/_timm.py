"""Adapter for timm's ``VisionTransformer`` family.

Covers ViT, DeiT (including the distilled variant with two prefix tokens),
register tokens, layer scale, ``global_pool="token"|"avg"|"map"`` (``"map"``:
attention pooling by ``AttentionPoolLatent``, as in timm's SigLIP towers; see
:mod:`captum_vit.adapters._pooling`) and ``dynamic_img_size``. The explicit forwards reproduce
``timm.models.vision_transformer.Block.forward`` and
``timm.layers.Attention.forward`` (both the fused and the unfused path compute
the same function) with the attention core and residual sums routed through a
:class:`~captum_vit.adapters.Tracer`.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    List,
    Optional,
    Tuple,
    Union,
    cast,
)

import torch
from torch import Tensor, nn

from ._base import (
    BlockParts,
    EmbeddingParts,
    HeadParts,
    Tracer,
    UnsupportedModelError,
    ViTAdapter,
)
from ._parts import (
    attention_norms,
    block_parts,
    chain,
    check_fixed_size,
    gated_mlp_forwards,
    is_timm,
    pre_norm,
    routed_block,
    timm_attention,
    timm_blocks,
    timm_gaps,
)
from ._pooling import (
    attention_pool_forward,
    attention_pool_gaps,
    attention_pool_parts,
    check_attention_pool,
)

if TYPE_CHECKING:
    from timm.layers import Attention, AttentionPoolLatent
    from timm.models.beit import Beit
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.eva import Eva
    from timm.models.vision_transformer import Block, VisionTransformer

    #: the models of the timm adapters (:class:`TimmViTAdapter` and its
    #: subclasses for BEiT and EVA)
    TimmModel = Union[VisionTransformer, Beit, Eva]


def _active(dropout: nn.Dropout) -> Optional[nn.Dropout]:
    return dropout if dropout.training and dropout.p > 0 else None


def routed_pos_embed(
    m: Union[VisionTransformer, Eva], x: Tensor, tracer: Tracer
) -> Tensor:
    """timm's ``VisionTransformer._pos_embed`` (prefix tokens joined, the
    absolute position embedding added, resampled for ``dynamic_img_size``),
    with the positional sum routed through :meth:`Tracer.embed_add`. Also
    the prefix-and-position part of ``Eva._pos_embed``."""
    to_cat = []
    if m.cls_token is not None:
        to_cat.append(m.cls_token.expand(x.shape[0], -1, -1))
    dist_token: Optional[Tensor] = getattr(m, "dist_token", None)  # distilled DeiT
    if dist_token is not None:
        to_cat.append(dist_token.expand(x.shape[0], -1, -1))
    if m.reg_token is not None:
        to_cat.append(m.reg_token.expand(x.shape[0], -1, -1))
    if m.pos_embed is None:
        return torch.cat(to_cat + [x.view(x.shape[0], -1, x.shape[-1])], 1)
    if m.dynamic_img_size:
        from timm.layers import resample_abs_pos_embed

        B, H, W, C = x.shape
        pos = resample_abs_pos_embed(
            m.pos_embed,
            new_size=(H, W),
            old_size=m.patch_embed.grid_size,
            num_prefix_tokens=0 if m.no_embed_class else m.num_prefix_tokens,
        )
        x = x.view(B, -1, C)
    else:
        pos = m.pos_embed
    if m.no_embed_class:
        x = tracer.embed_add(x, pos)
        if to_cat:
            x = torch.cat(to_cat + [x], dim=1)
    else:
        if to_cat:
            x = torch.cat(to_cat + [x], dim=1)
        x = tracer.embed_add(x, pos)
    return m.pos_drop(x)


class TimmViTAdapter(ViTAdapter):
    """Adapter for ``timm.models.vision_transformer.VisionTransformer``."""

    family = "timm VisionTransformer (ViT, DeiT, registers, layer scale)"

    # the description below is shared with the BEiT and EVA subclasses
    model: TimmModel

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return is_timm(model, "vision_transformer", "VisionTransformer")

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        from timm.layers import Attention
        from timm.models.vision_transformer import Block

        for i, blk in enumerate(self.model.blocks):
            attn = getattr(blk, "attn", None)
            if type(blk) is not Block or type(attn) is not Attention:
                raise UnsupportedModelError(
                    f"timm block {i} is {type(blk).__name__} with "
                    f"{type(attn).__name__} attention; captum_vit "
                    "supports timm's pre-norm `Block` with the standard `Attention`."
                )
            if getattr(attn, "gate", None) is not None:
                raise UnsupportedModelError("gated timm attention is not supported")
        check_attention_pool(model)
        if self.model.global_pool not in ("token", "avg", "map"):
            raise UnsupportedModelError(
                f"timm global_pool={self.model.global_pool!r} is not supported "
                "(use 'token', 'avg' or 'map')."
            )
        if getattr(model, "pool_include_prefix", False):
            raise UnsupportedModelError("pool_include_prefix=True is not supported")

    def _attn_pool(self) -> Optional[AttentionPoolLatent]:
        """The attention-pooling head (``global_pool="map"``), or None (also
        on a BEiT, which has no such attribute)."""
        pool: Optional[AttentionPoolLatent] = getattr(self.model, "attn_pool", None)
        return pool

    # ------------------------------------------------------------ description
    @property
    def num_prefix_tokens(self) -> int:
        return int(self.model.num_prefix_tokens)

    @property
    def has_class_token(self) -> bool:
        return bool(getattr(self.model, "cls_token", None) is not None)

    @property
    def distilled(self) -> bool:
        return getattr(self.model, "dist_token", None) is not None

    @property
    def pooling(self) -> str:
        if self._attn_pool() is not None:
            return "attention"
        return "token" if self.model.global_pool == "token" else "avg"

    @property
    def patch_size(self) -> Tuple[int, int]:
        return tuple(self.model.patch_embed.patch_size)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def num_heads(self) -> int:
        return int(timm_attention(timm_blocks(self.model)[0].attn).num_heads)

    def blocks(self) -> List[nn.Module]:
        return list(self.model.blocks)

    def block_parts(self, layer: int) -> BlockParts:
        blk = _vit_block(self.model.blocks[layer])
        attn = _attention(blk.attn)
        scales = [m for m in (blk.ls1, blk.ls2) if not isinstance(m, nn.Identity)]
        norms = attention_norms(attn)
        return block_parts(
            blk, attn, [attn.qkv], attn.proj, scales=scales, attention_norms=norms
        )

    def relevance_gaps(self) -> List[str]:
        return timm_gaps(self.model) + attention_pool_gaps(self._attn_pool())

    def embedding_parts(self) -> EmbeddingParts:
        pe = self.model.patch_embed
        norm = None if isinstance(pe.norm, nn.Identity) else pe.norm
        return EmbeddingParts(pe.proj, norm, post_norm=pre_norm(self.model))

    def head_parts(self) -> HeadParts:
        m = self.model
        heads: List[nn.Module] = [m.head]
        if self.distilled:
            heads.append(cast("VisionTransformerDistilled", m).head_dist)

        def real(mod: Optional[nn.Module]) -> Optional[nn.Module]:
            return None if mod is None or isinstance(mod, nn.Identity) else mod

        return HeadParts(
            real(m.norm),
            heads,
            fc_norm=real(m.fc_norm),
            pooler=attention_pool_parts(self._attn_pool()),
        )

    def _dynamic(self) -> bool:
        return bool(getattr(self.model, "dynamic_img_size", False))

    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        pe = self.model.patch_embed
        if self._dynamic():
            h, w = image_size
            gh, gw = pe.dynamic_feat_size((h, w))
        else:
            gh, gw = pe.grid_size
        return gh, gw

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        pe = self.model.patch_embed
        h, w = image_size
        ph, pw = self.patch_size
        if self._dynamic():
            if not getattr(pe, "dynamic_img_pad", False) and (h % ph or w % pw):
                raise ValueError(
                    f"image size {h}x{w} is not divisible by the patch size {ph}x{pw}; "
                    "crop or resize the images, or build the model with "
                    "dynamic_img_pad=True."
                )
            return
        if getattr(pe, "strict_img_size", True):
            hint = "; build it with dynamic_img_size=True for other sizes."
            check_fixed_size(image_size, pe.img_size, "timm model", hint)
        if h % ph or w % pw:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {ph}x{pw}"
            )

    # ----------------------------------------------------------------- tracing
    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        blk = _vit_block(block)
        norms = (blk.norm1, blk.norm2)
        branches = (chain(blk.ls1, blk.drop_path1), chain(blk.ls2, blk.drop_path2))

        def forward(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            # Block.forward passes its attention's arguments (attn_mask,
            # is_causal) on
            def attend(h: Tensor) -> Tensor:
                return blk.attn(h, *args, **kwargs)

            return routed_block(layer, tracer, x, attend, blk.mlp, norms, branches)

        return forward

    def _attention_forward(
        self, layer: int, module: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        attn = _attention(module)

        def forward(
            x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False
        ) -> Tensor:
            if is_causal:
                raise NotImplementedError("causal attention is not supported")
            B, N, _ = x.shape
            qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            q, k = attn.q_norm(q), attn.k_norm(k)
            o = tracer.attention(
                layer,
                q,
                k,
                v,
                attn.scale,
                mask=attn_mask,
                dropout=_active(attn.attn_drop),
            )
            o = o.transpose(1, 2).reshape(B, N, attn.attn_dim)
            o = attn.norm(o)
            return attn.proj_drop(attn.proj(o))

        return forward

    def _pool_tokens(self, tokens: Tensor, tracer: Tracer) -> List[Tensor]:
        ap = self._attn_pool()
        if ap is None:
            return super()._pool_tokens(tokens, tracer)
        pool = attention_pool_forward(ap, tracer, self.num_prefix_tokens)
        return [pool(tokens[:, self.num_prefix_tokens :])]

    def _pooling_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        ap = self._attn_pool()
        if ap is None:
            return []
        fn = attention_pool_forward(ap, tracer, self.num_prefix_tokens)
        return [(ap, "forward", fn)]

    def _mlp_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        return gated_mlp_forwards(self.blocks(), tracer)

    def _end_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        # a VisionTransformer: the BEiT and EVA subclasses have their own
        m = cast("VisionTransformer", self.model)
        adapter = self

        def _pos_embed(x: Tensor) -> Tensor:
            return routed_pos_embed(m, x, tracer)

        def forward_head(
            x: Tensor, pre_logits: bool = False
        ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
            N = x.shape[1]
            if adapter.distilled:
                # VisionTransformerDistilled: the class and distillation tokens
                d = cast("VisionTransformerDistilled", m)
                eye = torch.eye(N, device=x.device, dtype=x.dtype)
                outs = [d.head_drop(tracer.pool(x, eye[i])) for i in range(2)]
                if pre_logits:
                    return tracer.merge_heads(outs)
                cls, dist = d.head(outs[0]), d.head_dist(outs[1])
                if d.distilled_training and d.training:
                    return cls, dist
                return tracer.merge_heads([cls, dist])
            if getattr(m, "attn_pool", None) is not None:  # _pooling_forwards
                x = m.attn_pool(x[:, m.num_prefix_tokens :])
            else:
                w = ViTAdapter.pool_weights(adapter, N, x.device, x.dtype)
                x = tracer.pool(x, w)
            x = m.head_drop(m.fc_norm(x))
            return x if pre_logits else m.head(x)

        return [(m, "_pos_embed", _pos_embed), (m, "forward_head", forward_head)]


def _vit_block(block: nn.Module) -> Block:
    """``block`` as a timm ``Block`` (the base class passes blocks as
    ``Module``; :class:`TimmViTAdapter` checks their class when it is made)."""
    return cast("Block", block)


def _attention(module: nn.Module) -> Attention:
    """``module`` as a timm ``Attention`` (timm types ``Block.attn`` as
    ``Module``, made by a factory; :class:`TimmViTAdapter` checks its
    class)."""
    return cast("Attention", module)
