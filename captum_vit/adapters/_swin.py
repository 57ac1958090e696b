"""What the Swin adapters of the three families share.

A Swin Transformer (Liu et al., ICCV 2021, https://arxiv.org/abs/2103.14030;
v2: Liu et al., CVPR 2022, https://arxiv.org/abs/2111.09883) attends within
(shifted) windows of a token grid and merges 2x2 neighbouring tokens between
stages; it has no prefix token and pools by averaging the last stage's
tokens. :class:`SwinAdapter` turns a family's description of every block
(its stage, window and shift at a given grid, whether the family pads before
or after the cyclic shift) into the :class:`~captum_vit.adapters.TokenGraph`;
the family adapters say how their blocks compute.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import Tracer, ViTAdapter
from ._graph import (
    LayerWindows,
    Stage,
    TokenGraph,
    patch_merge_2x2,
    window_index,
)
from ._parts import pair, routed_block

Pair = Tuple[int, int]


def ceil_half(grid: Pair) -> Pair:
    """The grid after a 2x2 patch merging (odd sizes padded)."""
    return ((grid[0] + 1) // 2, (grid[1] + 1) // 2)


def nhwc_block_forward(
    layer: int,
    tracer: Tracer,
    attend: Callable[[Tensor], Tensor],
    blk_norms: Tuple[nn.Module, nn.Module],
    mlp: nn.Module,
    drops: Tuple[nn.Module, nn.Module],
    post_norm: bool,
) -> Callable[[Tensor], Tensor]:
    """The explicit forward of a Swin block on ``(B, H, W, C)`` grids (timm,
    torchvision): ``x + drop(attend(norm1(x)))`` then ``x + drop(mlp(norm2(x)))``
    (v1), or with the norms after the attention and the MLP (v2), the block's
    tokens, the attention's input (:meth:`Tracer.attention_input`: ``norm1(x)``
    in v1, ``x`` in v2) and the residual sums routed through ``tracer`` as
    ``(B, H * W, C)``."""

    def forward(x: Tensor) -> Tensor:
        B, H, W, C = x.shape

        def attend_grid(a: Tensor) -> Tensor:
            return attend(a.reshape(B, H, W, C))

        def branch1(h: Tensor) -> Tensor:
            return drops[0](h).reshape(B, H * W, C)

        x = x.reshape(B, H * W, C)
        branches = (branch1, drops[1])
        y = routed_block(
            layer, tracer, x, attend_grid, mlp, blk_norms, branches, post_norm
        )
        return y.reshape(B, H, W, C)

    return forward


class CosineNorm(nn.Module):
    r"""Swin v2's normalisation of queries or keys as a module:
    :math:`x / \lVert x \rVert` per head, times :math:`\exp(\min(s, \log 100))`
    for the queries (the learnt logit scale :math:`s`, per head), so that the
    scores are the scaled cosine similarities.

    The adapter holds one per layer (a reference to the model's
    ``logit_scale``, no copy), calls it in the explicit attention and lists it
    in :attr:`BlockParts.attention_norms`, so that methods that treat norms
    by a rule (LRP) find it.
    """

    def __init__(self, head_dim: int, logit_scale: Optional[Tensor] = None) -> None:
        super().__init__()
        self.normalized_shape = (head_dim,)
        self.logit_scale = logit_scale

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(x, dim=-1)
        if self.logit_scale is None:
            return x
        return x * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()


class SwinAdapter(ViTAdapter):
    """Base of the Swin adapters: average pooling, no prefix token, a
    hierarchical, windowed token graph.

    Subclasses number their blocks by stage (:meth:`_number_blocks`), make
    Swin v2's cosine norms (:meth:`_make_cosine`), implement
    :meth:`window_shift` (a block's window and shift at a stage grid) and set
    :attr:`pad_first` (whether the block pads the grid to whole windows
    before the cyclic shift, as Hugging Face and torchvision do, or after it,
    as timm does). The explicit block forward is that of the ``(B, H, W, C)``
    blocks of timm and torchvision (:func:`nhwc_block_forward`), their
    attention and branch drops named by :attr:`_attend` and :attr:`_drops`.
    """

    #: the model pads the grid to whole windows before the cyclic shift
    pad_first: bool = True
    num_prefix_tokens = 0
    has_class_token = False
    pooling = "avg"
    plain = False
    #: the stock Swin (its attributes are the family's own: typed ``Any``)
    model: Any
    #: Swin v2: cosine attention, residual post-norm
    v2: bool = False
    #: the names of an NHWC block's attention and of its two branch drops
    _attend = "attn"
    _drops = ("drop_path1", "drop_path2")

    @property
    def half_precision_refusal(self) -> Optional[str]:
        """Swin v2 refuses half precision: its cosine attention multiplies
        unit-length query-key products by a learned scale of up to 100,
        whose float16/bfloat16 scores keep steps of 1/16 and 1/2 there."""
        if not self.v2:
            return None
        return (
            "Swin v2's cosine attention scales its scores by a learned factor of "
            "up to 100, where float16 and bfloat16 keep steps of 1/16 and 1/2: "
            "the model's own attention then leaves the documented tolerance "
            "(docs/performance.rst, Half precision)"
        )

    @property
    def num_heads(self) -> int:
        return self.layer_heads(0)

    def _number_blocks(self, stages: Iterable[Iterable[Any]]) -> None:
        """Keep the blocks of ``stages`` (each stage's blocks, in order) and
        their stage: :meth:`blocks`, :meth:`stage_of`."""
        self._blocks: List[Any] = []
        self._stages: List[int] = []
        for s, stage in enumerate(stages):
            for blk in stage:
                self._blocks.append(blk)
                self._stages.append(s)

    def _make_cosine(self, heads: Iterable[Tuple[int, Tensor]]) -> None:
        """Swin v2's query and key norms of every layer
        (:class:`CosineNorm`), from each layer's head width and logit scale
        in ``heads``; none for v1."""
        self._cosine: List[Tuple[CosineNorm, CosineNorm]] = []
        if self.v2:
            self._cosine = [(CosineNorm(d, s), CosineNorm(d)) for d, s in heads]

    def _v2_roles(self, layer: int) -> Dict[str, Any]:
        """The :class:`BlockParts` roles of layer ``layer`` that Swin v2
        sets: residual post-norm and the cosine norms."""
        norms = self._cosine[layer] if self.v2 else ()
        return {"post_norm": self.v2, "attention_norms": norms}

    def blocks(self) -> List[nn.Module]:
        return list(self._blocks)

    def layer_heads(self, layer: int) -> int:
        return int(self._blocks[layer].attn.num_heads)

    def stage_of(self, layer: int) -> int:
        """The stage of block ``layer``."""
        return self._stages[layer]

    def window_shift(self, layer: int, grid: Pair) -> Tuple[Pair, Pair]:
        """``(window, shift)`` of block ``layer`` on a stage grid ``grid``."""
        raise NotImplementedError

    @property
    def num_stages(self) -> int:
        return self.stage_of(self.num_layers - 1) + 1

    def stage_grids(self, image_size: Pair) -> List[Pair]:
        """The token grid of every stage for images of ``image_size``."""
        grids = [pair(self.grid_size((int(image_size[0]), int(image_size[1]))))]
        for _ in range(self.num_stages - 1):
            grids.append(ceil_half(grids[-1]))
        return grids

    def token_graph(self, image_size: Pair) -> TokenGraph:
        grids = self.stage_grids(image_size)
        layers = []
        for layer in range(self.num_layers):
            s = self.stage_of(layer)
            window, shift = self.window_shift(layer, grids[s])
            index = window_index(grids[s], window, shift, self.pad_first)
            layers.append(LayerWindows(s, index))
        merges = tuple(patch_merge_2x2(g) for g in grids[:-1])
        last = grids[-1][0] * grids[-1][1]
        pool = torch.full((last,), 1.0 / last, dtype=torch.float64)
        stages = tuple(Stage(g) for g in grids)
        return TokenGraph(stages, tuple(layers), merges, pool)

    # ----------------------------------------------------------------- tracing
    def _block_forward(
        self, layer: int, blk: Any, tracer: Tracer
    ) -> Callable[..., Any]:
        drops = (getattr(blk, self._drops[0]), getattr(blk, self._drops[1]))
        attend = getattr(blk, self._attend)
        norms = (blk.norm1, blk.norm2)
        return nhwc_block_forward(layer, tracer, attend, norms, blk.mlp, drops, self.v2)

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def bias_and_mask(
        bias: Tensor, mask: Optional[Tensor], batch_windows: int, repeat: int = 1
    ) -> Tensor:
        """The additive attention mask of a window batch: the relative position
        bias ``(1, H, n, n)`` plus, if given, the shift mask ``(nW, n, n)``
        (``repeat`` times, as Hugging Face's Swin v2 adds it) expanded over the
        ``batch_windows = B * nW`` windows: ``(B * nW, H, n, n)``."""
        if mask is None:
            return bias
        nW, n, _ = mask.shape
        H = bias.shape[1]
        mask = mask.view(1, nW, 1, n, n) * repeat
        full = mask.expand(batch_windows // nW, nW, H, n, n).reshape(-1, H, n, n)
        return bias + full
