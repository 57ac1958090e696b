r"""Adapter for timm's ``Cait`` (CaiT, Touvron et al., ICCV 2021,
https://arxiv.org/abs/2103.17239).

CaiT runs in two phases. The **self-attention phase** (``model.blocks``,
``LayerScaleBlock``) attends over the patch tokens only, with layer scale and
*talking-heads* attention (Shazeer et al. 2020, https://arxiv.org/abs/2003.02436):
two linear maps across heads, ``proj_l`` on the scores before the softmax and
``proj_w`` on the probabilities after it,

.. math::
    A = P_w\big(\mathrm{softmax}(P_l(s\,QK^\top))\big), \qquad O = A V .

The **class-attention phase** (``model.blocks_token_only``,
``LayerScaleBlockClassAttn``) appends the learnt class token; in each layer
the class token alone queries ``[class token; patches]`` (``ClassAttn``) and
only the class token is updated, the patches pass unchanged. The head reads
the class token.

The explicit forwards reproduce ``LayerScaleBlock``/``TalkingHeadAttn`` and
``LayerScaleBlockClassAttn``/``ClassAttn`` (fused or not) with the attention
core and the residual sums routed through the
:class:`~captum_vit.adapters.Tracer`; the attention a tracer records in a
self-attention layer is :math:`A` above, the one that multiplies :math:`V`
(after ``proj_w``), ``(B, heads, P, P)``; in a class-attention layer the class
token's row ``(B, heads, 1, 1 + P)``. Layers are numbered through both
phases: ``0 .. depth - 1`` the self-attention blocks, then the
class-attention blocks. The token graph and how the methods compose the two
phases: ``docs/token_graph.rst``, "CaiT: two phases".
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import torch
from torch import Tensor, nn

from ._base import BlockParts, HeadParts, Tracer, UnsupportedModelError, ViTAdapter
from ._graph import LayerWindows, Merge, Stage, TokenGraph, dense_layer
from ._parts import (
    block_parts,
    chain,
    gate_gaps,
    is_timm,
    mlp_parts,
    routed_block,
    scale_views,
)
from ._timm import TimmViTAdapter, _active


def _across_heads(linear: nn.Module) -> Callable[[Tensor], Tensor]:
    """``linear`` applied across the heads of ``(B, H, nq, N)`` tensors, as
    timm's ``TalkingHeadAttn`` does (heads moved last and back)."""

    def mix(t: Tensor) -> Tensor:
        return linear(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    return mix


class TimmCaitAdapter(TimmViTAdapter):
    """Adapter for ``timm.models.cait.Cait`` with class-token pooling.

    Args:
        model (torch.nn.Module): a ``timm.models.cait.Cait`` with
            ``global_pool="token"`` and its stock blocks.

    Raises:
        UnsupportedModelError: other blocks, or a pooling that does not read
            the class token (``"avg"`` pools the patches, which the
            class-attention layers never change, so the class-attention
            phase would not reach the output).
    """

    family = "timm Cait (CaiT: talking-heads self-attention, then class attention)"
    plain = False
    class_attention = True
    #: the stock CaiT (its attributes are the family's own: typed ``Any``)
    model: Any

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return is_timm(model, "cait", "Cait")

    def __init__(self, model: nn.Module) -> None:
        ViTAdapter.__init__(self, model)
        from timm.models import cait

        m: Any = model
        for i, blk in enumerate(m.blocks):
            if type(blk) is not cait.LayerScaleBlock or not isinstance(
                blk.attn, cait.TalkingHeadAttn
            ):
                raise UnsupportedModelError(
                    f"timm Cait block {i} is {type(blk).__name__} with "
                    f"{type(blk.attn).__name__}; captum_vit supports CaiT's "
                    "LayerScaleBlock with TalkingHeadAttn."
                )
        token_only = m.blocks_token_only
        if token_only is None or len(token_only) == 0 or m.cls_token is None:
            raise UnsupportedModelError(
                "this timm Cait has no class-attention blocks or no class token "
                "(pruned for features): there is no classifier to explain"
            )
        for i, blk in enumerate(token_only):
            if type(blk) is not cait.LayerScaleBlockClassAttn or not isinstance(
                blk.attn, cait.ClassAttn
            ):
                raise UnsupportedModelError(
                    f"timm Cait class-attention block {i} is {type(blk).__name__}; "
                    "captum_vit supports LayerScaleBlockClassAttn with ClassAttn."
                )
        if m.global_pool != "token":
            raise UnsupportedModelError(
                f"timm Cait global_pool={m.global_pool!r} is not supported: "
                "only 'token' reads the class token, the output of the "
                "class-attention layers ('avg' pools the patch tokens, which those "
                "layers never change)"
            )
        self._depth = len(m.blocks)
        blocks: List[Any] = self.blocks()
        for blk in blocks:
            mlp_parts(blk.mlp)  # refuses an unknown MLP layout
        self._ls = scale_views(blocks, ("gamma_1", "gamma_2"))

    # ------------------------------------------------------------ description
    @property
    def num_class_attention_layers(self) -> int:
        """The class-attention layers, the last of :attr:`num_layers`."""
        return len(self.model.blocks_token_only)

    def blocks(self) -> List[nn.Module]:
        return list(self.model.blocks) + list(self.model.blocks_token_only)

    def block_parts(self, layer: int) -> BlockParts:
        blk: Any = self.blocks()[layer]
        attn = blk.attn
        scales = [s for s in self._ls[layer] if s is not None]
        if layer < self._depth:
            qkv, mixing = [attn.qkv], [attn.proj_l, attn.proj_w]
        else:
            qkv, mixing = [attn.q, attn.k, attn.v], []
        return block_parts(blk, attn, qkv, attn.proj, scales=scales, head_mixing=mixing)

    def relevance_gaps(self) -> List[str]:
        return gate_gaps(self.blocks())

    def head_parts(self) -> HeadParts:
        return HeadParts(self.model.norm, [self.model.head])

    def token_graph(self, image_size: Tuple[int, int]) -> TokenGraph:
        """Two stages: the ``P`` patches of the self-attention phase (dense
        attention, no prefix token; a single layer's map there reads the
        uniform mean over the patches, :attr:`Stage.query_row`) and
        ``[class token, patches]`` of the class-attention phase (one dense
        window whose only query is the class token), joined by a merge under
        which each patch is itself and the class token comes from no earlier
        token; the pooling row is the class token's one-hot."""
        gh, gw = (int(g) for g in self.grid_size(image_size))
        P = gh * gw
        patches = Stage((gh, gw), 0, query_row=torch.full((P,), 1.0 / P).double())
        with_cls = Stage((gh, gw), 1)
        layers = [dense_layer(0, P) for _ in range(self._depth)]
        cls_row = torch.tensor([0])
        layers += [
            LayerWindows(1, torch.arange(P + 1)[None], queries=cls_row)
            for _ in range(self.num_class_attention_layers)
        ]
        index = torch.cat([torch.tensor([[-1]]), torch.arange(P)[:, None]])
        weight = (index >= 0).double()
        pool = self.pool_weights(P + 1, dtype=torch.float64)
        return TokenGraph(
            (patches, with_cls), tuple(layers), (Merge(index, weight),), pool
        )

    # ----------------------------------------------------------------- tracing
    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        blk: Any = block
        scale1, scale2 = self._ls[layer]
        branches = (chain(scale1, blk.drop_path), chain(scale2, blk.drop_path))
        if layer < self._depth:

            def forward(x: Tensor) -> Tensor:
                # LayerScaleBlock.forward
                norms = (blk.norm1, blk.norm2)
                return routed_block(
                    layer, tracer, x, blk.attn, blk.mlp, norms, branches
                )

            return forward

        def forward_cls(x: Tensor, x_cls: Tensor) -> Tensor:
            # LayerScaleBlockClassAttn.forward: the block's input and output
            # are the class token (B, 1, D); the patches x pass unchanged and
            # the attention reads the normed [class token; patches]
            def norm1(c: Tensor) -> Tensor:
                return blk.norm1(torch.cat((c, x), dim=1))

            norms = (norm1, blk.norm2)
            return routed_block(
                layer, tracer, x_cls, blk.attn, blk.mlp, norms, branches
            )

        return forward_cls

    def _attention_forward(
        self, layer: int, module: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        attn: Any = module
        if layer < self._depth:
            heads = (_across_heads(attn.proj_l), _across_heads(attn.proj_w))

            def forward(x: Tensor) -> Tensor:
                # TalkingHeadAttn.forward
                B, N, C = x.shape
                H = attn.num_heads
                qkv = attn.qkv(x).reshape(B, N, 3, H, C // H).permute(2, 0, 3, 1, 4)
                o = tracer.attention(
                    layer,
                    qkv[0],
                    qkv[1],
                    qkv[2],
                    attn.scale,
                    dropout=_active(attn.attn_drop),
                    talking_heads=heads,
                )
                o = o.transpose(1, 2).reshape(B, N, C)
                return attn.proj_drop(attn.proj(o))

            return forward

        def forward_cls(x: Tensor) -> Tensor:
            # ClassAttn.forward: the class token (row 0) is the only query
            B, N, C = x.shape
            H = attn.num_heads
            q = attn.q(x[:, 0]).reshape(B, 1, H, C // H).permute(0, 2, 1, 3)
            k = attn.k(x).reshape(B, N, H, C // H).permute(0, 2, 1, 3)
            v = attn.v(x).reshape(B, N, H, C // H).permute(0, 2, 1, 3)
            o = tracer.attention(
                layer, q, k, v, attn.scale, dropout=_active(attn.attn_drop)
            )
            o = o.transpose(1, 2).reshape(B, 1, C)
            return attn.proj_drop(attn.proj(o))

        return forward_cls

    def _end_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        m = self.model
        adapter = self

        def forward_features(x: Tensor) -> Tensor:
            # Cait.forward_features, with the positional sum routed
            x = m.pos_drop(tracer.embed_add(m.patch_embed(x), m.pos_embed))
            x = m.forward_cls(m.blocks(x))
            return m.norm(x)

        def forward_head(x: Tensor, pre_logits: bool = False) -> Tensor:
            w = ViTAdapter.pool_weights(adapter, x.shape[1], x.device, x.dtype)
            x = m.head_drop(tracer.pool(x, w))
            return x if pre_logits else m.head(x)

        return [
            (m, "forward_features", forward_features),
            (m, "forward_head", forward_head),
        ]
