"""EViT-style token-pruning view (Liang et al., ICLR 2022)."""

from __future__ import annotations

import math
from typing import Iterable, List, Optional

import torch
from torch import Tensor, nn

from ..adapters import Tracer
from ._base import ViTAttribution
from ._registry import register_method


def default_prune_layers(num_layers: int) -> List[int]:
    """EViT's pruning locations scaled to ``num_layers``: blocks 4, 7 and 10
    (0-based 3, 6, 9) of 12, i.e. ``floor(L * k / 4)`` for ``k = 1, 2, 3``."""
    return sorted({num_layers * k // 4 for k in (1, 2, 3)})


class _PruningTracer(Tracer):
    """Runs EViT's pruning inside the stock blocks' forward.

    After the attention residual of a pruning block the patch tokens are
    ranked by the class token's attention (head mean), the top
    ``ceil(keep_rate * n)`` kept and the rest fused into one token; the MLP of
    the block and every later block then see the shorter sequence.
    """

    def __init__(
        self,
        prune_layers: Iterable[int],
        keep_rate: float,
        fuse: bool,
        num_prefix: int,
        num_layers: int,
    ) -> None:
        super().__init__(keep_attention=True, layers=prune_layers)
        self.prune_layers = frozenset(prune_layers)
        self.keep_rate = keep_rate
        self.fuse = fuse
        self.npre = num_prefix
        self.num_layers = num_layers
        self.ids: Optional[Tensor] = None  # original patch id per position
        self.depth: Optional[Tensor] = None

    def residual(self, layer: int, index: int, x: Tensor, branch: Tensor) -> Tensor:
        x = x + branch
        if index != 0 or layer not in self.prune_layers:
            return x
        B, N, D = x.shape
        npre = self.npre
        if self.ids is None:  # first pruning: every non-prefix token is a patch
            P = N - npre
            self.ids = torch.arange(P, device=x.device).expand(B, P)
            self.depth = torch.full(
                (B, P), float(self.num_layers), dtype=torch.float32, device=x.device
            )
        assert self.depth is not None  # set with self.ids
        n = N - npre
        left = math.ceil(self.keep_rate * n)
        if left >= n:
            return x
        cls_attn = self.attentions[layer][:, :, 0, npre:].mean(dim=1)  # (B, n)
        _, idx = torch.topk(cls_attn, left, dim=1, largest=True, sorted=True)
        drop = torch.ones_like(cls_attn, dtype=torch.bool).scatter_(1, idx, False)
        compl = drop.nonzero()[:, 1].reshape(B, n - left)
        dropped = torch.gather(self.ids, 1, compl)
        b = torch.arange(B, device=x.device)[:, None].expand_as(dropped)
        real = dropped >= 0
        self.depth[b[real], dropped[real]] = float(layer + 1)
        tokens = x[:, npre:]
        kept = torch.gather(tokens, 1, idx[..., None].expand(B, left, D))
        parts = [x[:, :npre], kept]
        ids = [torch.gather(self.ids, 1, idx)]
        if self.fuse:
            rest = torch.gather(tokens, 1, compl[..., None].expand(B, n - left, D))
            # the model's dtype: half-precision models record float32 attention
            w = torch.gather(cls_attn, 1, compl).to(rest.dtype)
            parts.append((rest * w[..., None]).sum(dim=1, keepdim=True))
            ids.append(torch.full((B, 1), -1, dtype=self.ids.dtype, device=x.device))
        self.ids = torch.cat(ids, dim=1)
        return torch.cat(parts, dim=1)


@register_method("evit")
class EViT(ViTAttribution):
    r"""Token-pruning view after EViT (Liang, Ge, Tong, Song, Wang, Xie,
    ICLR 2022, "Not All Patches Are What You Need",
    https://arxiv.org/abs/2202.07800): which patch tokens a keep-rate cascade
    keeps, and for how long.

    The stock model is run with EViT's token reorganisation inserted into the
    blocks listed in ``prune_layers``: after the attention (and its residual
    sum) of such a block, the :math:`n` non-prefix tokens are ranked by the
    class token's attention averaged over heads,

    .. math::
        a_j = \frac{1}{H}\sum_h A^{(l)}_{h,\,0 j},

    the top :math:`\lceil \rho\, n \rceil` are kept (:math:`\rho` =
    ``keep_rate``) and the others are fused into one token
    :math:`\sum_{j \notin \mathrm{top}} a_j x_j` (EViT's "inattentive token
    fusion"); the block's MLP and all later blocks see the shorter sequence.
    The attribution of a patch is the **depth it survives to**: the number
    of blocks whose attention saw it as a token of its own,

    .. math::
        \phi_p = l_p + 1 \text{ if pruned in block } l_p,
        \qquad \phi_p = L \text{ if never pruned},

    so the map has at most ``len(prune_layers) + 1`` levels (ties are
    expected: it is a view of the cascade, not a ranking).

    Choices: this runs the **actual pruned forward** (through the adapter's
    tracer, so every later ranking uses the attention of the shorter
    sequence, including the fused token, exactly as EViT does) rather than
    ranking on the attention of the unpruned forward, which would differ
    after the first pruning. The model is not fine-tuned for pruning (EViT
    is), so the view shows what a stock model's attention would keep.
    Default locations are EViT's blocks 4, 7, 10 of 12 (0-based 3, 6, 9),
    scaled as ``floor(L k / 4)``; the default keep rate is EViT's 0.7.
    Prefix tokens (class, distillation, registers) are always kept and never
    ranked; the model needs a class token. ``target`` is ignored (the view
    is class-agnostic).

    Args:
        model (torch.nn.Module): a stock Vision Transformer with a class
            token, or an adapter.
        keep_rate (float, optional): fraction :math:`\rho \in (0, 1]` of the
            tokens kept at each pruning block. Default: 0.7
        prune_layers (iterable of int, optional): 0-based blocks that prune.
            Default: None (``floor(L k / 4)``, k = 1, 2, 3)
        fuse_token (bool, optional): fuse the pruned tokens into one token
            (EViT) instead of dropping them. Default: True
        interpolate_mode (str, optional): upsampling of the token map to
            pixels (``"nearest"`` shows the discrete levels). Default:
            ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_small_patch16_224").eval()
        >>> depth = cv.EViT(model, keep_rate=0.7).attribute(
        ...     torch.randn(1, 3, 224, 224), output="tokens")
        >>> sorted(depth.unique().tolist())
        [4.0, 7.0, 10.0, 12.0]
    """

    _plain_only = (
        "EViT ranks the tokens of a layer by the class token's attention to them "
        "and prunes the sequence every later layer attends over; this model has "
        "no class token attending in every layer, attends within windows and "
        "merges tokens between stages"
    )
    _no_class_attention = (
        "EViT ranks the tokens of a layer by the class token's attention to "
        "them and drops the others from the sequence of every later "
        "self-attention layer; in CaiT the class token attends only in the "
        "class-attention layers, after every self-attention layer, so there "
        "is no class-token attention to prune the self-attention layers by"
    )
    _drops_tokens = True
    _half_dtypes = (torch.float16,)
    _half_refusal = (
        "its map is the order in which tokens are pruned, ranked by the class "
        "token's attention; bfloat16's 8 significant bits reorder near-equal "
        "attentions and the pruned sequences then differ (docs/performance.rst, "
        "Half precision)"
    )

    def __init__(
        self,
        model: nn.Module,
        keep_rate: float = 0.7,
        prune_layers: Optional[Iterable[int]] = None,
        fuse_token: bool = True,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        if not 0.0 < float(keep_rate) <= 1.0:
            raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
        if not self.adapter.has_class_token:
            raise ValueError(
                "EViT ranks tokens by class-token attention; this model has no class token"
            )
        L = self.adapter.num_layers
        if prune_layers is None:
            layers = default_prune_layers(L)
        else:
            layers = sorted({self._layer_index(int(i)) for i in prune_layers})
        self.keep_rate = float(keep_rate)
        self.prune_layers = layers
        self.fuse_token = fuse_token

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        tracer = _PruningTracer(
            self.prune_layers,
            self.keep_rate,
            self.fuse_token,
            self.adapter.num_prefix_tokens,
            self.adapter.num_layers,
        )
        with torch.no_grad(), self.adapter.trace(tracer):
            self.adapter.forward(inputs, *args)
        if tracer.depth is None:  # no pruning layer: everything survives
            size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
            gh, gw = self.adapter.grid_size(size)
            return torch.full(
                (inputs.shape[0], gh * gw), float(self.adapter.num_layers)
            )
        return tracer.depth
