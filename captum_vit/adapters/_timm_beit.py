"""Adapter for timm's ``Beit`` (BEiT, BEiT v2).

BEiT (Bao et al., ICLR 2022, https://arxiv.org/abs/2106.08254) is a pre-norm
ViT with a class token whose attention adds a learned **relative position
bias** to the scores, per layer (``use_rel_pos_bias``) or shared by all
layers (``use_shared_rel_pos_bias``, both may be set), an optional absolute
position embedding (``use_abs_pos_emb``), layer scale (``init_values``) and
``q``/``v`` biases kept apart from the fused ``qkv`` projection; it pools by
the mean of the patch tokens followed by ``fc_norm`` (``global_pool="avg"``,
the default) or by the class token.

The explicit forwards reproduce ``timm.models.beit.Block.forward`` and
``Attention.forward`` (fused and unfused paths compute the same function):
the bias enters the attention core as the additive ``mask`` of
:meth:`Tracer.attention`, so the recorded scores (``keep_scores``) and a
``score_hook`` see the final pre-softmax scores

.. math::
    S = s\\,q k^\\top + B_{\\text{layer}} + B_{\\text{shared}}.

For the LRP rules the bias is a constant term of the scores: relevance
arriving at :math:`S` goes to :math:`q k^\\top` (as for any additive mask).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple, Union, cast

import torch
from torch import Tensor, nn

from ._base import BlockParts, Tracer, UnsupportedModelError, ViTAdapter
from ._parts import (
    FusedQKV,
    attention_norms,
    block_parts,
    chain,
    check_positions,
    is_timm,
    routed_block,
    scale_views,
    timm_gaps,
)
from ._timm import TimmViTAdapter, _active

if TYPE_CHECKING:
    from timm.models import beit
    from timm.models.eva import Eva, EvaAttention, EvaBlock


def check_global_pool(model: Union[beit.Beit, Eva]) -> None:
    """Refuse a timm model that does not pool by class token or patch mean."""
    if model.global_pool not in ("token", "avg"):
        raise UnsupportedModelError(
            f"timm {type(model).__name__} global_pool={model.global_pool!r} is not "
            "supported (use 'token' or 'avg')."
        )


class TimmBeitAdapter(TimmViTAdapter):
    """Adapter for ``timm.models.beit.Beit`` (BEiT, BEiT v2).

    The relative position bias of each layer (and the shared one) is added to
    the scores as the ``mask`` of :meth:`Tracer.attention`; the pooling row is
    uniform over the patch tokens for ``global_pool="avg"`` (followed by
    ``fc_norm``), the class token for ``"token"``. The model's bare ``q``/``v``
    biases and layer-scale parameters reach the LRP rules through the
    adapter's own :class:`~captum_vit.adapters._parts.FusedQKV` and
    :class:`~captum_vit.adapters._parts.Scale` views.

    Args:
        model (torch.nn.Module): a ``timm.models.beit.Beit`` with
            ``global_pool`` ``"avg"`` or ``"token"``.
    """

    family = "timm Beit (BEiT, BEiT v2; relative position bias, shared or per layer)"

    # the views and the block are shared with the EVA subclass
    model: Union[beit.Beit, Eva]

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return is_timm(model, "beit", "Beit")

    def __init__(self, model: nn.Module) -> None:
        ViTAdapter.__init__(self, model)
        from timm.models import beit

        for i, blk in enumerate(self.model.blocks):
            attn = getattr(blk, "attn", None)
            if type(blk) is not beit.Block or type(attn) is not beit.Attention:
                raise UnsupportedModelError(
                    f"timm Beit block {i} is {type(blk).__name__}; captum_vit "
                    "supports timm.models.beit.Block with its Attention."
                )
        check_global_pool(self.model)
        self._make_views()

    # ------------------------------------------------------------ description
    def _blocks(self) -> List[Union[beit.Block, EvaBlock]]:
        """The model's blocks, typed (``nn.Sequential`` and ``nn.ModuleList``
        type their items as ``Module``; their class is checked when the
        adapter is made)."""
        return cast("List[Union[beit.Block, EvaBlock]]", list(self.model.blocks))

    def _make_views(self) -> None:
        """This adapter's :class:`FusedQKV`/:class:`Scale` views (one object
        per layer, made once, so the LRP rules and the forward meet)."""
        blocks = self._blocks()
        attns = [_attn(b.attn) for b in blocks]
        self._qkv = [FusedQKV(a) if a.qkv is not None else None for a in attns]
        self._ls = scale_views(blocks, ("gamma_1", "gamma_2"))

    def block_parts(self, layer: int) -> BlockParts:
        blk = self._blocks()[layer]
        qkv = self._qkv[layer]
        fused = [qkv] if qkv is not None else []  # EVA's separate q, k, v: its own
        scales = [s for s in self._ls[layer] if s is not None]
        norms = attention_norms(blk.attn)
        return block_parts(
            blk, blk.attn, fused, blk.attn.proj, scales=scales, attention_norms=norms
        )

    def relevance_gaps(self) -> List[str]:
        return timm_gaps(self.model)

    # ----------------------------------------------------------------- tracing
    def _block(
        self,
        layer: int,
        blk: Union[beit.Block, EvaBlock],
        tracer: Tracer,
        x: Tensor,
        attend: Callable[[Tensor], Tensor],
    ) -> Tensor:
        """The block (timm's BEiT and EVA alike) with its residual sums routed:
        ``x + drop_path1(gamma_1 * attend(norm1(x)))``, then the MLP branch."""
        scale1, scale2 = self._ls[layer]
        norms = (blk.norm1, blk.norm2)
        branches = (chain(scale1, blk.drop_path1), chain(scale2, blk.drop_path2))
        return routed_block(layer, tracer, x, attend, blk.mlp, norms, branches)

    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        blk = cast("beit.Block", block)  # checked when the adapter is made

        def forward(x: Tensor, shared_rel_pos_bias: Optional[Tensor] = None) -> Tensor:
            def attend(y: Tensor) -> Tensor:
                return blk.attn(y, shared_rel_pos_bias=shared_rel_pos_bias)

            return self._block(layer, blk, tracer, x, attend)

        return forward

    def _attention_forward(
        self, layer: int, module: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        attn = cast("beit.Attention", module)  # checked when the adapter is made
        qkv_proj = self._qkv[layer]
        assert qkv_proj is not None  # a BEiT attention has a fused qkv

        def forward(x: Tensor, shared_rel_pos_bias: Optional[Tensor] = None) -> Tensor:
            B, N, _ = x.shape
            qkv = qkv_proj(x).reshape(B, N, 3, attn.num_heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            bias = shared_rel_pos_bias
            if attn.relative_position_bias_table is not None:
                own = attn._get_rel_pos_bias()
                bias = own if bias is None else own + bias
            if bias is not None:
                check_positions(bias.shape[-1], N, "relative position bias")
            o = tracer.attention(
                layer, q, k, v, attn.scale, mask=bias, dropout=_active(attn.attn_drop)
            )
            o = o.transpose(1, 2).reshape(B, N, -1)
            return attn.proj_drop(attn.proj(o))

        return forward

    def _forward_head(self, tracer: Tracer) -> Callable[..., Tensor]:
        """``forward_head`` of BEiT and EVA (the pooling, ``fc_norm``, the
        classifier) with the pooling routed through :meth:`Tracer.pool`."""
        m = self.model
        adapter = self

        def forward_head(x: Tensor, pre_logits: bool = False) -> Tensor:
            w = ViTAdapter.pool_weights(adapter, x.shape[1], x.device, x.dtype)
            x = m.head_drop(m.fc_norm(tracer.pool(x, w)))
            return x if pre_logits else m.head(x)

        return forward_head

    def _end_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        m = cast("beit.Beit", self.model)  # the EVA subclass has its own

        def forward_features(x: Tensor) -> Tensor:
            # Beit.forward_features, with the positional sum routed
            x = m.patch_embed(x)
            x = torch.cat((m.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            if m.pos_embed is not None:
                x = tracer.embed_add(x, m.pos_embed)
            x = m.pos_drop(x)
            rel_pos_bias = m.rel_pos_bias() if m.rel_pos_bias is not None else None
            for blk in m.blocks:
                x = blk(x, shared_rel_pos_bias=rel_pos_bias)
            return m.norm(x)

        return [
            (m, "forward_features", forward_features),
            (m, "forward_head", self._forward_head(tracer)),
        ]


def _attn(module: nn.Module) -> Union[beit.Attention, EvaAttention]:
    """A block's ``attn`` (timm types ``EvaBlock.attn`` as ``AttentionRope``;
    the adapters check its class when they are made)."""
    return cast("Union[beit.Attention, EvaAttention]", module)
