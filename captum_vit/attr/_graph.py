r"""Operators over the token graph (``docs/token_graph.rst``).

An attention method reads the explained token's row of a product of per-layer
token-mixing matrices,

.. math::
    r = w_S \, M^{(L-1)} \cdots M^{(l_s)} \, P_{S-1} \cdots P_0 \, M^{(l_0 - 1)}
        \cdots M^{(0)},

with :math:`w_S` the pooling row over the last stage's tokens, :math:`M^{(l)}`
a layer's mixing matrix over its stage's tokens (block-diagonal over the
layer's windows) and :math:`P_s` the merge maps. It is computed as a row
vector propagated from the pooling row through the layers, last first:
:math:`v \leftarrow v M^{(l)}` costs :math:`O(N_s w^2)` per windowed layer
(gather the window entries of :math:`v`, multiply by each window's block,
scatter back) and :math:`v \leftarrow v P_s` is a sparse scatter. No dense
:math:`N \times N` matrix over a stage with windows is ever formed.

The map of a single layer of stage :math:`s` (raw attention, Grad-SAM) is
read with the pooling row pulled back to that stage, :math:`w_s = w_S P_{S-1}
\cdots P_s`, and pushed to the first stage's tokens with the merges below
it, :math:`w_s M^{(l)} P_{s-1} \cdots P_0`: every map has the first stage's
resolution.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import Tensor

from ..adapters import LayerWindows, Merge, TokenGraph, Tracer
from ._base import fuse_heads

__all__ = [
    "blocks",
    "window_eye",
    "through_layer",
    "through_merge",
    "to_stage",
    "pool_row",
    "compose",
    "all_queries_row",
    "patch_scores",
    "discard_smallest",
    "MixingTracer",
]


def blocks(attn: Tensor, lw: LayerWindows) -> Tensor:
    """A layer's recorded attention ``(B * nW, ...)`` viewed as ``(B, nW, ...)``."""
    return attn.reshape(-1, lw.num_windows, *attn.shape[1:])


def window_eye(lw: LayerWindows, like: Tensor) -> Tensor:
    """The identity on the layer's window positions ``(nq, n)``: ones where a
    query row and a key column are the same token (``(n, n)`` unless the
    layer has a query subset, :attr:`LayerWindows.queries`)."""
    n = lw.window_tokens
    if lw.queries is None:
        return torch.eye(n, dtype=like.dtype, device=like.device)
    keys = lw.index[0].to(like.device)
    return (lw.queries.to(like.device)[:, None] == keys[None, :]).to(like.dtype)


def through_layer(
    v: Tensor, M: Tensor, lw: LayerWindows, passthrough: bool = True
) -> Tensor:
    """``v M`` for row vectors ``v`` ``(R, N_s)`` and a block-diagonal
    mixing matrix given by its windows' blocks ``M`` ``(R, nW, nq, n)``.

    Padding positions read zero and what lands on them is dropped. For a
    layer with a query subset (:attr:`LayerWindows.queries`, one window) the
    other tokens pass unchanged (their rows are the identity) if
    ``passthrough``, else they contribute nothing (the map of the attention
    alone, as a single layer's map reads it).
    """
    index = lw.index.to(v.device)
    real = index >= 0
    safe = index.clamp(min=0)
    if lw.queries is None:
        rows = v[:, safe] * real  # (R, nW, n)
        out = v.new_zeros(v.shape)
    else:
        q = lw.queries.to(v.device)
        rows = v[:, q][:, None]  # (R, 1, nq)
        out = v.clone() if passthrough else v.new_zeros(v.shape)
        out[:, q] = 0
    mixed = torch.einsum("rwq,rwqk->rwk", rows, M.to(v.dtype))
    return out.index_add_(1, safe[real], mixed[:, real])


def through_merge(v: Tensor, merge: Merge, num_before: int) -> Tensor:
    """``v P`` for row vectors ``v`` ``(R, N_{s+1})``: ``(R, N_s)``."""
    index = merge.index.to(v.device)
    real = index >= 0
    contrib = v[:, :, None] * merge.weight.to(device=v.device, dtype=v.dtype)
    out = v.new_zeros(v.shape[0], num_before)
    return out.index_add_(1, index[real], contrib[:, real])


def to_stage(graph: TokenGraph, v: Tensor, stage: int, target: int = 0) -> Tensor:
    """Push row vectors ``v`` over the tokens of ``stage`` down to the tokens
    of stage ``target`` through the merges in between."""
    for s in range(stage - 1, target - 1, -1):
        v = through_merge(v, graph.merges[s], graph.stages[s].num_tokens)
    return v


def pool_row(
    graph: TokenGraph,
    stage: int,
    rows: int,
    dtype: torch.dtype,
    device: Optional[torch.device] = None,
) -> Tensor:
    """The pooling row pulled back to ``stage``: ``(rows, N_stage)``; the
    stage's own :attr:`~captum_vit.adapters.Stage.query_row` where it has one
    (CaiT's self-attention phase, which the class token never attends in).

    A static row is repeated ``rows`` times; a per-sample row (attention
    pooling, ``(B, N_S)``) is repeated ``rows // B`` times per sample,
    sample-major (several maps per sample: one per head).

    Raises:
        RuntimeError: the graph has no pooling row yet (an attention-pooled
            model's graph not taken from a traced forward).
    """
    if graph.pool is None:
        raise RuntimeError(
            "the model pools by attention: its pooling row is read from the "
            "traced forward (ViTAttribution._graph(inputs, tracer))"
        )
    own = graph.stages[stage].query_row
    if own is not None:  # a stage the pooling row does not reach (CaiT)
        return own.to(device=device, dtype=dtype)[None].expand(rows, -1)
    w = graph.pool.to(device=device, dtype=dtype)
    w = to_stage(graph, w[None] if w.dim() == 1 else w, len(graph.stages) - 1, stage)
    if w.shape[0] == 1:
        return w.expand(rows, -1)
    return w.repeat_interleave(rows // w.shape[0], dim=0)


def compose(graph: TokenGraph, ops: Mapping[int, Tensor], v: Tensor) -> Tensor:
    """Row vectors ``v`` over the last stage's tokens times the product of
    the layers' mixing matrices ``ops[l]`` (``(R, nW, n, n)``, last layer
    first; layers missing from ``ops`` are the identity) and the merges
    between stages: ``(R, N_0)``."""
    stage = len(graph.stages) - 1
    for layer in range(len(graph.layers) - 1, -1, -1):
        lw = graph.layers[layer]
        v = to_stage(graph, v, stage, lw.stage)
        stage = lw.stage
        if layer in ops:
            v = through_layer(v, ops[layer], lw)
    return to_stage(graph, v, stage, 0)


def all_queries_row(
    graph: TokenGraph, lw: LayerWindows, rows: int, like: Tensor
) -> Tensor:
    """The uniform mean over the layer's query rows ``(rows, N_s)``: every
    token of its stage, or its query subset (:attr:`LayerWindows.queries`:
    CaiT's class-attention rows are the class token's alone)."""
    N = graph.stages[lw.stage].num_tokens
    if lw.queries is None:
        return like.new_full((rows, N), 1.0 / N)
    row = like.new_zeros(rows, N)
    row[:, lw.queries.to(like.device)] = 1.0 / len(lw.queries)
    return row


def patch_scores(graph: TokenGraph, v: Tensor) -> Tensor:
    """Scores over the first stage's tokens ``(..., N_0)`` without the
    prefix tokens: the patch-grid map ``(..., gh * gw)``."""
    return v[..., graph.stages[0].num_prefix_tokens :]


def discard_smallest(fused: Tensor, lw: LayerWindows, ratio: float) -> Tensor:
    """Zero the fraction ``ratio`` of the smallest entries of each sample's
    fused attention ``(B, nW, nq, n)`` (the entries the layer computes, all
    windows together), never the entry of stage token 0 with itself (the
    class token's, as vit-explain keeps it)."""
    B = fused.shape[0]
    flat = fused.reshape(B, -1)
    k = int(flat.shape[1] * ratio)
    if k == 0:
        return fused
    flat = flat.clone()
    index = lw.index
    rows = index if lw.queries is None else lw.queries[None]
    win, pos = (rows == 0).nonzero()[0].tolist()
    col = int((index[win] == 0).nonzero()[0])
    keep = (win * rows.shape[1] + pos) * index.shape[1] + col
    kept = flat[:, keep].clone()
    idx = flat.topk(k, dim=-1, largest=False).indices
    flat.scatter_(1, idx, 0.0)
    flat[:, keep] = kept
    return flat.reshape(fused.shape)


class MixingTracer(Tracer):
    r"""Turns each explicit layer's attention into its rollout mixing matrix
    during the forward, and keeps nothing else.

    Per layer the heads are fused (``head_fusion``), the smallest entries
    optionally discarded, the identity added on the window positions for the
    residual connection and the rows renormalised:
    :math:`\hat A = (\bar A + I) / \mathrm{rowsum}(\bar A + I)`, in at least
    float32 (``dtype`` if given).

    For a plain graph (one dense attention per layer) the product
    ``joint <- hat A @ joint`` is accumulated as the layers run: ``O(B N^2)``
    memory whatever the depth. Otherwise each layer's blocks
    ``(B, nW, n, n)`` are kept in :attr:`ops` (memory linear in the number
    of windows) for :func:`compose`.

    Args:
        graph (TokenGraph): the model's graph at this input size.
        head_fusion (str): ``"mean"``, ``"max"`` or ``"min"``.
        layers (range): the layers of the product; the others run torch's
            fused attention.
        discard_ratio (float, optional): see :func:`discard_smallest`.
            Default: 0.0
        accumulate (bool, optional): accumulate ``joint`` (plain graphs
            only). Default: True
        dtype (torch.dtype, optional): dtype of the mixing matrices.
            Default: None (the attention's, at least float32)
    """

    def __init__(
        self,
        graph: TokenGraph,
        head_fusion: str,
        layers: range,
        discard_ratio: float = 0.0,
        accumulate: bool = True,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(keep_attention=False, layers=layers)
        self.graph = graph
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio
        self.accumulate = accumulate and graph.plain
        self.dtype = dtype
        self.ops: Dict[int, Tensor] = {}
        self.joint: Optional[Tensor] = None

    def probabilities(self, layer: int, attn: Tensor) -> Tensor:
        attn = super().probabilities(layer, attn)
        self._mix(layer, attn.detach())
        return attn

    def _mix(self, layer: int, attn: Tensor) -> None:
        lw = self.graph.layers[layer]
        dtype = self.dtype or torch.promote_types(attn.dtype, torch.float32)
        attn = blocks(attn, lw).to(dtype)  # (B, nW, H, n, n)
        if self.accumulate and self.head_fusion == "mean" and not self.discard_ratio:
            # rows of the mean sum to one, so hat A = (sum_h A_h / H + I) / 2:
            # one reduction and one fused multiply-add per layer
            summed = attn[:, 0].sum(dim=1)
            half = 0.5 / attn.shape[2]
            if self.joint is None:
                eye = window_eye(lw, summed)
                self.joint = torch.add(eye * 0.5, summed, alpha=half)
            else:
                self.joint = torch.baddbmm(
                    self.joint, summed, self.joint, beta=0.5, alpha=half
                )
            return
        fused = fuse_heads(attn, self.head_fusion, dim=2)
        if self.discard_ratio > 0:
            fused = discard_smallest(fused, lw, self.discard_ratio)
        hat = fused + window_eye(lw, fused)
        hat = hat / hat.sum(dim=-1, keepdim=True)
        if not self.accumulate:
            self.ops[layer] = hat
        elif self.joint is None:
            self.joint = hat[:, 0]
        else:
            self.joint = torch.bmm(hat[:, 0], self.joint)

    def row(self) -> Tensor:
        """The pooling row times the product: ``(B, N_0)``. On an
        attention-pooled model the pooling row is the one this forward
        recorded (:meth:`Tracer.pool_row`)."""
        graph = self.graph.with_pool(self.pool_row())
        last = len(graph.stages) - 1
        if self.accumulate:
            if self.joint is None:
                raise RuntimeError("no layer ran the explicit attention")
            joint = self.joint
            w = pool_row(graph, last, joint.shape[0], joint.dtype, joint.device)
            return torch.einsum("bn,bnm->bm", w, joint)
        some = next(iter(self.ops.values()))
        v = pool_row(graph, last, some.shape[0], some.dtype, some.device)
        return compose(graph, self.ops, v)
