"""Adapter for timm's ``Eva`` (EVA, EVA-02).

EVA (Fang et al., CVPR 2023, https://arxiv.org/abs/2211.07636) and EVA-02
(Fang et al., 2023, https://arxiv.org/abs/2303.11331) are pre-norm ViTs in
the BEiT line: class token (optional) and register tokens, absolute position
embedding (``use_abs_pos_emb``, with or without positions for the prefix
tokens), **rotary position embedding** of ``q`` and ``k`` (RoPE,
``use_rot_pos_emb``; Su et al., https://arxiv.org/abs/2104.09864), a
**SwiGLU** MLP (``swiglu_mlp``, with a norm inside for EVA-02's
``scale_mlp``), layer scale, ``q``/``v`` biases apart from a fused ``qkv`` or
three separate projections (``qkv_fused=False``), average pooling with
``fc_norm`` or class-token pooling, and ``dynamic_img_size``.

The explicit forwards reproduce ``EvaBlock.forward`` and
``EvaAttention.forward``: RoPE rotates the patch tokens' ``q`` and ``k``
(prefix tokens are not rotated) before :meth:`Tracer.attention`, so the
recorded scores are those of the rotated vectors,

.. math::
    S_{ij} = s\\,\\big(R_{p_i} q_i\\big)^\\top \\big(R_{p_j} k_j\\big) + M_{ij}

with :math:`R_p` the rotation of position :math:`p` and :math:`M` a user's
``attn_mask``. Not supported: post-norm blocks (``use_post_norm``), timm's
``AttentionRope`` (``attn_type="rope"``), gated attention and attention
pooling.

For the LRP methods the rotation goes through :meth:`Tracer.rotary`: it is a
fixed linear map without bias, :math:`y_p = R_p x_p`, whose rule is the
z-rule in Chefer et al.'s sets (as for the pooling, the other fixed linear
map),

.. math::
    R_x = x \\odot R_p^\\top \\operatorname{sdiv}(R_y, y),

and LRP-:math:`\\epsilon` in AttnLRP (the plain gradient at
:math:`\\epsilon = 0`). The SwiGLU product goes through :meth:`Tracer.gate`
(each factor gets half the relevance: Chefer et al.'s halved z-rule, as for
the attention's products; AttnLRP's uniform rule); the norms inside the
attention (``qk_norm``, ``scale_attn_inner``), the SwiGLU's norm
(``scale_mlp``) and ``norm_pre`` get the norm rule of ``norm1``. See
``docs/lrp.rst``.
"""

from __future__ import annotations

from types import ModuleType
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    cast,
)

import torch
from torch import Tensor, nn

from ._base import BlockParts, Tracer, UnsupportedModelError, ViTAdapter
from ._parts import check_positions
from ._timm import _active, routed_pos_embed
from ._timm_beit import TimmBeitAdapter, check_global_pool

if TYPE_CHECKING:
    from timm.models.eva import Eva, EvaAttention, EvaBlock


class _RotaryEmbedding(Protocol):
    """What the adapter calls on timm's rotary embeddings
    (``RotaryEmbeddingCat`` and its kin)."""

    def get_embed(self, shape: Optional[Sequence[int]] = None) -> Tensor: ...


def _eva() -> Optional[ModuleType]:
    try:
        from timm.models import eva
    except ImportError:  # pragma: no cover - timm is a hard dependency
        return None
    return eva


class TimmEvaAdapter(TimmBeitAdapter):
    """Adapter for ``timm.models.eva.Eva`` (EVA, EVA-02) with pre-norm
    ``EvaBlock`` and ``EvaAttention``.

    The rotary position embedding rotates the patch tokens' ``q`` and ``k``
    inside the explicit forward, before :meth:`Tracer.attention`; class and
    register tokens are prefix tokens; the pooling row is uniform over the
    patch tokens (``global_pool="avg"``) or the class token. The rotation
    goes through :meth:`Tracer.rotary` and the SwiGLU product through
    :meth:`Tracer.gate`, which give them their LRP rules.

    Args:
        model (torch.nn.Module): a ``timm.models.eva.Eva`` with
            ``global_pool`` ``"avg"`` or ``"token"``, without post-norm blocks,
            ``attn_type="rope"``, gated attention or attention pooling.
    """

    family = "timm Eva (EVA, EVA-02; rotary embedding, SwiGLU, registers)"

    model: Eva

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        eva = _eva()
        return eva is not None and isinstance(model, eva.Eva)

    def __init__(self, model: nn.Module) -> None:
        ViTAdapter.__init__(self, model)
        from timm.models import eva

        for i, blk in enumerate(self.model.blocks):
            attn = getattr(blk, "attn", None)
            if type(blk) is not eva.EvaBlock or type(attn) is not eva.EvaAttention:
                raise UnsupportedModelError(
                    f"timm Eva block {i} is {type(blk).__name__} with "
                    f"{type(attn).__name__} attention; captum_vit "
                    "supports pre-norm EvaBlock with EvaAttention (not use_post_norm "
                    "or attn_type='rope')."
                )
            if attn.gate is not None:
                raise UnsupportedModelError("gated Eva attention is not supported")
        if getattr(model, "attn_pool", None) is not None:
            raise UnsupportedModelError(
                "timm Eva with attention pooling (global_pool='map') is not "
                "supported: its prediction does not come from a token of the encoder."
            )
        check_global_pool(self.model)
        self._make_views()

    # ------------------------------------------------------------ description
    def block_parts(self, layer: int) -> BlockParts:
        parts = super().block_parts(layer)
        attn = _attn(self._blocks()[layer].attn)
        if attn.qkv is None:
            parts.qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
        return parts

    # ----------------------------------------------------------------- tracing
    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        blk = cast("EvaBlock", block)  # checked when the adapter is made

        def forward(
            x: Tensor,
            rope: Optional[Tensor] = None,
            attn_mask: Optional[Tensor] = None,
            is_causal: bool = False,
        ) -> Tensor:
            def attend(y: Tensor) -> Tensor:
                return blk.attn(y, rope=rope, attn_mask=attn_mask, is_causal=is_causal)

            return self._block(layer, blk, tracer, x, attend)

        return forward

    def _attention_forward(
        self, layer: int, module: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        from timm.layers import apply_rot_embed_cat

        attn = _attn(module)
        qkv_proj = self._qkv[layer]

        def forward(
            x: Tensor,
            rope: Optional[Tensor] = None,
            attn_mask: Optional[Tensor] = None,
            is_causal: bool = False,
        ) -> Tensor:
            if is_causal:
                raise NotImplementedError("causal attention is not supported")
            B, N, C = x.shape
            if qkv_proj is not None:
                qkv = qkv_proj(x).reshape(B, N, 3, attn.num_heads, -1)
                q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            else:
                shape = (B, N, attn.num_heads, -1)
                q = attn.q_proj(x).reshape(shape).transpose(1, 2)
                k = attn.k_proj(x).reshape(shape).transpose(1, 2)
                v = attn.v_proj(x).reshape(shape).transpose(1, 2)
            q, k = attn.q_norm(q), attn.k_norm(k)
            if rope is not None:
                npt = attn.num_prefix_tokens
                check_positions(rope.shape[-2] + npt, N, "rotary position embedding")
                half = getattr(attn, "rotate_half", False)

                def rotation(t: Tensor) -> Tensor:
                    return apply_rot_embed_cat(t, rope, half=half)

                def rotate(t: Tensor) -> Tensor:
                    # the patch tokens only, as EvaAttention does
                    patches = tracer.rotary(layer, t[:, :, npt:], rotation)
                    return torch.cat([t[:, :, :npt], patches], dim=2).type_as(v)

                q, k = rotate(q), rotate(k)
            o = tracer.attention(
                layer,
                q,
                k,
                v,
                attn.scale,
                mask=attn_mask,
                dropout=_active(attn.attn_drop),
            )
            o = attn.norm(o.transpose(1, 2).reshape(B, N, C))
            return attn.proj_drop(attn.proj(o))

        return forward

    def _end_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        m = self.model
        stock_pos_embed = type(m)._pos_embed

        def _pos_embed(x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
            # Eva._pos_embed, with the positional sum routed
            if m.pos_embed is None:
                return stock_pos_embed(m, x)
            if m.patch_drop is not None and m.patch_drop.training:
                raise NotImplementedError(
                    "patch dropout in training mode is not supported; call model.eval()"
                )
            rot = None
            if m.rope is not None:
                # timm's create_rope_embed types the embedding as a Module
                rope = cast(_RotaryEmbedding, m.rope)
                if m.dynamic_img_size:
                    rot = rope.get_embed(shape=tuple(x.shape[1:3]))
                elif hasattr(rope, "feat_shape"):
                    rot = rope.get_embed()
                else:
                    rot = rope.get_embed(shape=m.patch_embed.grid_size)
            return routed_pos_embed(m, x, tracer), rot

        return [
            (m, "_pos_embed", _pos_embed),
            (m, "forward_head", self._forward_head(tracer)),
        ]


def _attn(module: nn.Module) -> EvaAttention:
    """A block's ``attn`` (timm types it as ``AttentionRope``; the adapter
    checks that it is an ``EvaAttention`` when it is made)."""
    return cast("EvaAttention", module)
