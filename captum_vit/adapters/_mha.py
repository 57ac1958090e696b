"""``torch.nn.MultiheadAttention``, explicit: its projections as linear views
and its forward routed through a :class:`~captum_vit.adapters.Tracer`.

torchvision's ViT, open_clip's ``ResidualAttentionBlock`` and the
attention-pooling heads of open_clip (``AttentionalPooler``) and Hugging Face
SigLIP (``SiglipMultiheadAttentionPoolingHead``) call an
``nn.MultiheadAttention`` with ``need_weights=False``, so its probabilities
are never materialised. The functions here compute the same function from its
parameters (``in_proj_weight`` or ``q/k/v_proj_weight``, ``in_proj_bias``,
``out_proj``), with the attention core routed through the tracer; the views
make its packed input projection look like linear layers to the LRP rules.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import BlockParts, Tracer, UnsupportedModelError, ViTAdapter
from ._parts import block_parts, present

__all__ = [
    "InProj",
    "MHAAdapter",
    "check_mha",
    "self_attention_forward",
    "probe_attention",
]

_PARTS = {"q": 0, "k": 1, "v": 2}


class InProj(nn.Module):
    """View of ``nn.MultiheadAttention``'s input projection as a linear layer.

    ``part=None`` is the packed projection (queries, keys and values in one
    linear, ``in_proj_weight``); ``"q"``, ``"k"`` or ``"v"`` one of them (a
    slice of the packed weight, or ``q/k/v_proj_weight`` when the keys and
    values have their own width). ``weight`` and ``bias`` are read from the
    attention module on every call (no copy, no parameter of its own).

    Args:
        mha (torch.nn.MultiheadAttention): the attention module.
        part (str, optional): ``"q"``, ``"k"``, ``"v"`` or None (all three).
            Default: None
    """

    _mha: nn.MultiheadAttention

    def __init__(self, mha: nn.MultiheadAttention, part: Optional[str] = None) -> None:
        super().__init__()
        object.__setattr__(self, "_mha", mha)  # a plain attribute: owns nothing
        self._part = part

    def _rows(self, part: str) -> slice:
        i, E = _PARTS[part], self._mha.embed_dim
        return slice(i * E, (i + 1) * E)

    @property
    def weight(self) -> Tensor:
        mha, part = self._mha, self._part
        if part is None:
            return mha.in_proj_weight
        if mha.in_proj_weight is None:
            return getattr(mha, f"{part}_proj_weight")
        return mha.in_proj_weight[self._rows(part)]

    @property
    def bias(self) -> Optional[Tensor]:
        b = self._mha.in_proj_bias
        if b is None or self._part is None:
            return b
        return b[self._rows(self._part)]

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return "qkv" if self._part is None else self._part


def check_mha(mha: nn.MultiheadAttention, where: str) -> None:
    """Raise :class:`UnsupportedModelError` for the ``nn.MultiheadAttention``
    options the explicit forward does not compute (``bias_k``/``bias_v``,
    ``add_zero_attn``)."""
    if mha.bias_k is not None or mha.add_zero_attn:
        raise UnsupportedModelError(
            f"{where}: nn.MultiheadAttention with bias_k/bias_v or add_zero_attn is "
            "not supported"
        )


def _dropout(mha: nn.MultiheadAttention) -> Optional[Callable[[Tensor], Tensor]]:
    if not (mha.training and mha.dropout > 0):
        return None
    return lambda a: F.dropout(a, p=mha.dropout, training=True)


def _heads(x: Tensor, heads: int, batch_first: bool) -> Tensor:
    """``(B, L, E)`` (or ``(L, B, E)``) to ``(B, H, L, E / H)``."""
    if not batch_first:
        x = x.transpose(0, 1)
    B, L, E = x.shape
    return x.reshape(B, L, heads, E // heads).transpose(1, 2)


def _merge(o: Tensor, batch_first: bool) -> Tensor:
    """``(B, H, L, d)`` to ``(B, L, H d)`` (or ``(L, B, H d)``)."""
    B, H, L, d = o.shape
    o = o.transpose(1, 2).reshape(B, L, H * d)
    return o if batch_first else o.transpose(0, 1)


def self_attention_forward(
    mha: nn.MultiheadAttention, layer: int, tracer: Tracer, in_proj: InProj
) -> Callable[..., Tuple[Tensor, None]]:
    """An explicit ``forward`` for ``mha`` used as self-attention in block
    ``layer``: the packed projection ``in_proj`` (an :class:`InProj` of
    ``mha``), the attention core through :meth:`Tracer.attention`, the
    output projection. Returns ``(output, None)`` as the module does with
    ``need_weights=False``."""

    def forward(
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        need_weights: bool = True,
        attn_mask: Optional[Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> Tuple[Tensor, None]:
        if key is not query or value is not query:
            raise NotImplementedError("only self-attention is supported")
        if key_padding_mask is not None or is_causal:
            raise NotImplementedError("padding and causal masks are not supported")
        H = mha.num_heads
        bf = mha.batch_first
        qkv = in_proj(query)
        q, k, v = (_heads(t, H, bf) for t in qkv.chunk(3, dim=-1))
        mask = None
        if attn_mask is not None:
            # nn.MultiheadAttention: True = may NOT attend; float: added
            mask = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask
        o = tracer.attention(
            layer,
            q,
            k,
            v,
            q.shape[-1] ** -0.5,
            mask=mask,
            dropout=_dropout(mha),
        )
        return mha.out_proj(_merge(o, bf)), None

    return forward


def probe_attention(
    mha: nn.MultiheadAttention,
    views: Sequence[InProj],
    query: Tensor,
    tokens: Tensor,
    tracer: Tracer,
    queries: Sequence[int] = (0,),
) -> Tensor:
    """``mha(query, tokens, tokens)[0]`` of an attention-pooling head,
    batch-first ``(B, Q, E)``, with the cross-attention routed through
    :meth:`Tracer.pool_attention`.

    Args:
        mha (torch.nn.MultiheadAttention): the pooling attention.
        views (sequence of InProj): its ``q``, ``k`` and ``v`` views.
        query (Tensor): ``(B, Q, E)`` probe queries (batch first).
        tokens (Tensor): ``(B, N, kdim)`` tokens attended over.
        tracer (Tracer): the tracer.
        queries (sequence of int, optional): the probe rows the pooled vector
            reads (see :meth:`Tracer.pool_attention`). Default: ``(0,)``
    """
    H = mha.num_heads
    q_view, k_view, v_view = views
    q = _heads(q_view(query), H, True)
    k = _heads(k_view(tokens), H, True)
    v = _heads(v_view(tokens), H, True)
    o = tracer.pool_attention(
        q, k, v, q.shape[-1] ** -0.5, queries=queries, dropout=_dropout(mha)
    )
    return mha.out_proj(_merge(o, True))


class MHAAdapter(ViTAdapter):
    """Base of the adapters whose blocks attend with an
    ``nn.MultiheadAttention`` used as self-attention (torchvision's ViT,
    open_clip's towers): each block's packed in-projection seen as one linear
    (:class:`InProj`), its explicit attention :func:`self_attention_forward`,
    its norms ``ln_1`` and ``ln_2`` and, where it has them, the layer scales
    ``ls_1`` and ``ls_2``. Subclasses name the blocks' attention
    (:attr:`_mha`) and call :meth:`_make_in_proj` once the blocks are
    known."""

    #: the attribute of a block that holds its ``nn.MultiheadAttention``
    _mha = "attn"

    def _attention(self, layer: int) -> nn.MultiheadAttention:
        return cast(nn.MultiheadAttention, getattr(self.blocks()[layer], self._mha))

    def _make_in_proj(self) -> None:
        """One :class:`InProj` per block, made once (the LRP rules and the
        explicit forward meet on the same object)."""
        self._in_proj = [InProj(self._attention(i)) for i in range(self.num_layers)]

    @property
    def num_heads(self) -> int:
        return int(self._attention(0).num_heads)

    def block_parts(self, layer: int) -> BlockParts:
        blk, mha = self.blocks()[layer], self._attention(layer)
        scales = [getattr(blk, n, None) for n in ("ls_1", "ls_2")]
        qkv, norms = [self._in_proj[layer]], ("ln_1", "ln_2")
        return block_parts(
            blk, mha, qkv, mha.out_proj, norms, scales=[s for s in scales if present(s)]
        )

    def _attention_forward(
        self, layer: int, attn: nn.Module, tracer: Tracer
    ) -> Callable[..., Tuple[Tensor, None]]:
        mha = cast(nn.MultiheadAttention, attn)  # a block's self-attention
        return self_attention_forward(mha, layer, tracer, self._in_proj[layer])
