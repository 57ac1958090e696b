r"""Attention-pooling heads, explicit: timm's ``AttentionPoolLatent``
(``global_pool="map"``, the SigLIP towers of timm and open_clip), open_clip's
``AttentionalPooler`` (CoCa-style CLIP towers) and Hugging Face SigLIP's
``SiglipMultiheadAttentionPoolingHead``.

Each head pools the last block's tokens with learnt *probe* queries that
attend over them,

.. math::
    P = \mathrm{softmax}\!\left(s\, (p W_q)(Z W_k)^\top\right), \qquad
    o = P\,(Z W_v)\, W_o

(per head, then an optional ``o + \mathrm{MLP}(\mathrm{LN}(o))``), and the
pooled vector reads one probe's output (or the mean of several). The
explicit forwards below compute the same function with the cross-attention
routed through :meth:`Tracer.pool_attention`, so every traced forward records
:math:`P`. **The pooling row** of such a model, the row that attention methods
read in place of the class-token row, is :meth:`Tracer.pool_row`: :math:`P`
averaged over heads and over the probes the pooled vector reads, one row per
sample (it depends on the image). See ``docs/clip.rst`` for how each method
uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ._base import Tracer, UnsupportedModelError
from ._mha import InProj, check_mha, probe_attention
from ._parts import mlp_parts, present

if TYPE_CHECKING:
    from open_clip.transformer import AttentionalPooler
    from timm.layers import AttentionPoolLatent
    from transformers.models.siglip.modeling_siglip import (
        SiglipMultiheadAttentionPoolingHead,
    )
    from transformers.models.siglip2.modeling_siglip2 import (
        Siglip2MultiheadAttentionPoolingHead,
    )

    SiglipHead = Union[
        SiglipMultiheadAttentionPoolingHead, Siglip2MultiheadAttentionPoolingHead
    ]

__all__ = [
    "check_attention_pool",
    "attention_pool_forward",
    "attention_pool_parts",
    "attention_pool_gaps",
    "read_queries",
    "mha_views",
    "AttentionalPoolerForward",
    "siglip_head_forward",
]


def read_queries(tracer: Tracer, x: Tensor, queries: Sequence[int]) -> Tensor:
    """The pooled vector ``(B, D)`` read from the probe outputs ``x``
    ``(B, Q, D)``: the mean of ``queries``, through :meth:`Tracer.pool` (one
    query: its output)."""
    w = torch.zeros(x.shape[1], device=x.device, dtype=x.dtype)
    w[list(queries)] = 1.0 / len(queries)
    return tracer.pool(x, w)


def mha_views(mha: nn.MultiheadAttention) -> List[InProj]:
    """The ``q``, ``k`` and ``v`` projections of ``mha`` as linear views."""
    return [InProj(mha, part) for part in ("q", "k", "v")]


# -------------------------------------------------------------------- timm
def check_attention_pool(model: nn.Module) -> None:
    """Refuse the timm attention poolings the explicit forward does not
    compute (``AttentionPoolPrr``, a learnt position table in the pooler,
    a pooler that returns every probe)."""
    ap = getattr(model, "attn_pool", None)
    if ap is None:
        return
    from timm.layers import AttentionPoolLatent

    if type(ap) is not AttentionPoolLatent:
        raise UnsupportedModelError(
            f"timm attention pooling {type(ap).__name__} is not supported (only "
            "global_pool='map', AttentionPoolLatent)"
        )
    if ap.pos_embed is not None:
        raise UnsupportedModelError(
            "timm AttentionPoolLatent with its own position embedding "
            "(pos_embed='abs') is not supported"
        )
    if ap.pool not in ("token", "avg"):
        raise UnsupportedModelError(
            f"timm AttentionPoolLatent with pool_type={ap.pool!r} returns every "
            "probe, not a pooled vector: not supported"
        )


def attention_pool_parts(ap: Optional[AttentionPoolLatent]) -> List[nn.Module]:
    """The modules of a timm ``AttentionPoolLatent`` (for
    :attr:`HeadParts.pooler`), in call order; empty for None."""
    if ap is None:
        return []
    mods = [ap.q, ap.kv, ap.q_norm, ap.k_norm, ap.proj, ap.norm]
    if ap.mlp is not None:
        mods += mlp_parts(ap.mlp)[0]
    return [m for m in mods if present(m)]


def attention_pool_gaps(ap: Optional[AttentionPoolLatent]) -> List[str]:
    """Relevance gaps of a timm ``AttentionPoolLatent`` (its query/key
    norms)."""
    if ap is not None and (present(ap.q_norm) or present(ap.k_norm)):
        return ["the norms inside the pooling attention (qk_norm)"]
    return []


def attention_pool_forward(
    ap: AttentionPoolLatent, tracer: Tracer, first_key: int
) -> Callable[..., Tensor]:
    """``AttentionPoolLatent.forward`` with the cross-attention routed
    through :meth:`Tracer.pool_attention`, the residual around its MLP
    through :meth:`Tracer.residual` and the read of the probes through
    :meth:`Tracer.pool`. ``first_key``: the position of the first pooled
    token in the sequence (timm pools the tokens after the prefix)."""
    queries = [0] if ap.pool == "token" else list(range(ap.latent_len))

    def forward(x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        if attn_mask is not None:
            raise NotImplementedError("a mask on the attention pooling")
        B, N, C = x.shape
        L, H, d = ap.latent_len, ap.num_heads, ap.head_dim
        q = ap.q(ap.latent.expand(B, -1, -1)).reshape(B, L, H, d).transpose(1, 2)
        kv = ap.kv(x).reshape(B, N, 2, H, d).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        q, k = ap.q_norm(q), ap.k_norm(k)
        o = tracer.pool_attention(q, k, v, ap.scale, queries, first_key=first_key)
        o = ap.proj_drop(ap.proj(o.transpose(1, 2).reshape(B, L, H * d)))
        if ap.mlp is not None:
            o = tracer.residual(tracer.POOL, 1, o, ap.mlp(ap.norm(o)))
        return read_queries(tracer, o, queries)

    return forward


# ---------------------------------------------------------------- open_clip
class AttentionalPoolerForward:
    """open_clip ``AttentionalPooler.forward`` (keys and values normalised
    by ``ln_k``, the learnt queries by ``ln_q``, one
    ``nn.MultiheadAttention``) with the cross-attention routed through
    :meth:`Tracer.pool_attention`; returns every probe's output
    ``(B, Q, D)`` as the module does (the tower reads them).

    Args:
        pooler (torch.nn.Module): the ``AttentionalPooler``.
        queries (sequence of int): the probes the tower's pooled vector reads.
    """

    def __init__(self, pooler: AttentionalPooler, queries: Sequence[int]) -> None:
        check_mha(pooler.attn, "open_clip AttentionalPooler")
        self.pooler = pooler
        self.queries = list(queries)
        self.views = mha_views(pooler.attn)

    def parts(self) -> List[nn.Module]:
        """The pooler's modules (norms, projection views, output)."""
        p = self.pooler
        return [p.ln_k, p.ln_q, *self.views, p.attn.out_proj]

    def bind(self, tracer: Tracer) -> Callable[[Tensor], Tensor]:
        """The explicit ``forward`` routed through ``tracer``."""
        p = self.pooler

        def forward(x: Tensor) -> Tensor:
            x = p.ln_k(x)
            q = p.ln_q(p.query).unsqueeze(0).expand(x.shape[0], -1, -1)
            return probe_attention(p.attn, self.views, q, x, tracer, self.queries)

        return forward


# ------------------------------------------------------------ Hugging Face
def siglip_head_forward(
    head: SiglipHead, views: Sequence[InProj], tracer: Tracer
) -> Callable[[Tensor], Tensor]:
    """``SiglipMultiheadAttentionPoolingHead.forward`` (the probe attends
    over the tokens, then ``o + MLP(LN(o))``) with the cross-attention and
    the residual routed through ``tracer``."""

    def forward(hidden_state: Tensor) -> Tensor:
        probe = head.probe.expand(hidden_state.shape[0], -1, -1)
        o = probe_attention(head.attention, views, probe, hidden_state, tracer)
        o = tracer.residual(tracer.POOL, 1, o, head.mlp(head.layernorm(o)))
        return read_queries(tracer, o, [0])

    return forward
