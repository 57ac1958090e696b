r"""The token graph: what an adapter tells methods about how tokens mix.

A plain ViT has one token set and, in every layer, one attention over all of
it. A windowed, hierarchical model (Swin) has several token sets (stages),
attention within windows of one stage, and patch merging between stages. A
:class:`TokenGraph` describes both with the same few objects, so that every
attention method is written once:

* per layer a :class:`LayerWindows`: the stage it works on and the map from
  window positions to that stage's tokens, ``index`` ``(nW, n)``. The layer's
  attention probabilities are recorded as the model computes them,
  ``(B * nW, heads, n, n)``: a block-diagonal matrix over the stage's tokens
  stored block by block, never as a dense ``N x N`` matrix. A dense layer is
  one window holding every token in order (``index = arange(N)[None]``). The
  cyclic shift of shifted windows is part of ``index`` (a permutation of the
  stage's tokens); positions that hold padding (tokens the model adds to fill
  the last window, not functions of the image) are ``-1``;
* between stage ``s`` and ``s + 1`` a :class:`Merge`: a row-stochastic map
  :math:`P_s` of shape ``(N_{s+1}, N_s)`` stored sparsely, which earlier
  tokens each new token is made from, and with which weights;
* the pooling row ``pool`` over the last stage's tokens: ``(N_S,)``, the
  one-hot of the class token, or uniform over the patch tokens for average
  pooling (:meth:`ViTAdapter.pool_weights`); for attention pooling (CLIP's
  attentional pooler, SigLIP, timm ``global_pool="map"``) the pooling
  attention recorded in the traced forward, one row per sample ``(B, N_S)``
  (:meth:`Tracer.pool_row`, set by :meth:`TokenGraph.with_pool`; ``None``
  in the graph the adapter describes before that forward).

Tokens of a stage are its prefix tokens (class, distillation, registers)
followed by its grid in row-major order.

A layer may have fewer queries than keys (CaiT's class attention: only the
class token queries, :attr:`LayerWindows.queries`): the other tokens pass it
unchanged. CaiT's graph has two stages, the patches of the self-attention
phase and ``[class token, patches]`` of the class-attention phase, joined by
a merge under which the class token comes from no earlier token
(``docs/token_graph.rst``, "CaiT: two phases").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "TokenGraph",
    "Stage",
    "LayerWindows",
    "Merge",
    "dense_layer",
    "window_index",
    "patch_merge_2x2",
    "plain_graph",
]


@dataclass(frozen=True)
class Stage:
    """One token set: ``num_prefix_tokens`` prefix tokens, then a
    ``grid`` ``(h, w)`` of tokens in row-major order."""

    grid: Tuple[int, int]
    num_prefix_tokens: int = 0
    #: the row a single layer's map reads on this stage when the pooling row
    #: does not reach it (CaiT's self-attention phase, before the class
    #: token joins: the uniform mean over the patches) ``(N_s,)``; None: the
    #: pooling row pulled back through the merges
    query_row: Optional[Tensor] = field(default=None, compare=False)

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class LayerWindows:
    """Where one layer's attention lives.

    Attributes:
        stage (int): the stage whose tokens the layer attends over.
        index (Tensor): ``(nW, n)`` long; ``index[k, p]`` is the stage token
            at position ``p`` of window ``k`` (``-1``: padding). Every token
            of the stage appears exactly once.
        queries (Tensor or None): for a layer whose attention has fewer
            queries than keys (CaiT's class attention), the stage tokens of
            its query rows ``(nq,)``, in the order of the recorded rows; the
            other tokens pass the layer unchanged. The recorded attention is
            then ``(B * nW, heads, nq, n)``. None: every window position is a
            query.
    """

    stage: int
    index: Tensor
    queries: Optional[Tensor] = field(default=None, compare=False)

    @property
    def num_windows(self) -> int:
        return int(self.index.shape[0])

    @property
    def window_tokens(self) -> int:
        return int(self.index.shape[1])


@dataclass(frozen=True)
class Merge:
    r"""The row-stochastic map :math:`P` ``(N_{s+1}, N_s)`` from stage ``s``
    to stage ``s + 1``, stored by rows: new token ``i`` is made from the
    earlier tokens ``index[i]`` (``-1``: none) with weights ``weight[i]``,
    which sum to one over the real sources (zero for a token made from no
    earlier token, e.g. a class token that joins late)."""

    index: Tensor
    weight: Tensor


@dataclass(frozen=True)
class TokenGraph:
    """Stages, per-layer windows, merges and the pooling row of one model at
    one input size (see the module docstring)."""

    stages: Tuple[Stage, ...]
    layers: Tuple[LayerWindows, ...]
    merges: Tuple[Merge, ...]
    pool: Optional[Tensor]

    def with_pool(self, row: Optional[Tensor]) -> TokenGraph:
        """The graph with the pooling row ``row`` ``(B, N_S)`` recorded by a
        traced forward of an attention-pooled model
        (:meth:`Tracer.pool_row`, detached); the graph itself when ``row`` is
        None (a static pooling: nothing was recorded)."""
        if row is None:
            return self
        return replace(self, pool=row.detach().double())

    @property
    def plain(self) -> bool:
        """One stage and every layer one dense window over all tokens in
        order: today's "N x N attention per layer" (ViT, DeiT)."""
        if len(self.stages) != 1:
            return False
        N = self.stages[0].num_tokens
        ref = torch.arange(N)
        return all(
            lw.queries is None
            and lw.num_windows == 1
            and lw.window_tokens == N
            and torch.equal(lw.index[0], ref)
            for lw in self.layers
        )


def dense_layer(stage: int, num_tokens: int) -> LayerWindows:
    """A layer with one window holding all ``num_tokens`` tokens in order."""
    return LayerWindows(stage, torch.arange(num_tokens)[None])


def window_index(
    grid: Tuple[int, int],
    window: Tuple[int, int],
    shift: Tuple[int, int],
    pad_first: bool,
    num_prefix_tokens: int = 0,
) -> Tensor:
    """The ``(nW, wh * ww)`` map from window positions to grid tokens of
    Swin's (shifted) window partition.

    The grid of token ids is rolled by ``-shift`` and padded at the bottom
    and right to a multiple of the window (``pad_first``: padded before the
    roll, as Hugging Face and torchvision do; else after it, as timm does),
    then cut into windows row-major, positions row-major inside a window.
    Padding positions are ``-1``; ids count after ``num_prefix_tokens``.
    """
    (h, w), (wh, ww), (sh, sw) = grid, window, shift
    ids = torch.arange(h * w).view(h, w) + num_prefix_tokens

    def pad(t: Tensor) -> Tensor:
        ph, pw = (-t.shape[0]) % wh, (-t.shape[1]) % ww
        return torch.nn.functional.pad(t, (0, pw, 0, ph), value=-1)

    def roll(t: Tensor) -> Tensor:
        if sh or sw:
            return torch.roll(t, shifts=(-sh, -sw), dims=(0, 1))
        return t

    ids = roll(pad(ids)) if pad_first else pad(roll(ids))
    H, W = ids.shape
    return ids.view(H // wh, wh, W // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)


def patch_merge_2x2(grid: Tuple[int, int]) -> Merge:
    """Swin's patch merging: new token ``(i, j)`` of the ``(ceil(h/2),
    ceil(w/2))`` grid is made from tokens ``(2i + a, 2j + b)``, ``a, b`` in
    ``{0, 1}``, equally weighted over those inside the grid (odd sizes are
    padded by the model with zeros, which carry nothing)."""
    h, w = grid
    H, W = (h + 1) // 2, (w + 1) // 2
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    rows = torch.stack([2 * i, 2 * i + 1, 2 * i, 2 * i + 1], -1).reshape(H * W, 4)
    cols = torch.stack([2 * j, 2 * j, 2 * j + 1, 2 * j + 1], -1).reshape(H * W, 4)
    real = (rows < h) & (cols < w)
    index = torch.where(real, rows * w + cols, torch.full_like(rows, -1))
    weight = real.double() / real.sum(-1, keepdim=True)
    return Merge(index, weight)


def plain_graph(
    grid: Tuple[int, int],
    num_prefix_tokens: int,
    num_layers: int,
    pool: Optional[Tensor],
) -> TokenGraph:
    """The graph of a plain ViT: one stage, dense attention in every layer
    (``pool`` None: attention pooling, see :meth:`TokenGraph.with_pool`)."""
    num_tokens = num_prefix_tokens + grid[0] * grid[1]
    layers = tuple(dense_layer(0, num_tokens) for _ in range(num_layers))
    stage = Stage((int(grid[0]), int(grid[1])), num_prefix_tokens)
    return TokenGraph((stage,), layers, (), None if pool is None else pool.double())
