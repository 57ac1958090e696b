"""Holding patch tokens out of a stock ViT by attention masking (the surrogate's
partial inputs), through the adapter's :class:`~captum_vit.adapters.Tracer`."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ...adapters import Mask, Tracer


class MaskTracer(Tracer):
    """Holds out patch tokens by a ``-inf`` on their keys in every layer.

    A held-out token may only attend to itself (so no row of the softmax is
    empty); no other token sees it. For average-pooled models the pooling
    is restricted to the kept patch tokens.

    Args:
        keep_tokens (Tensor): ``(B, N)`` bool, True = the token is kept
            (prefix tokens included).
        patch_weights (Tensor, optional): ``(B, N)`` pooling weights of an
            average-pooled model (zero on prefix and held-out tokens), or
            None for class-token models. Default: None
        num_prefix_tokens (int, optional): class, distillation and register
            tokens in front of the patches; a pooling that reads none of the
            patches (the class-token half of DINOv2's head) is left as is.
            Default: 0
    """

    def __init__(
        self,
        keep_tokens: Tensor,
        patch_weights: Optional[Tensor] = None,
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__(keep_attention=False, score_hook=self._hook)
        N = keep_tokens.shape[-1]
        eye = torch.eye(N, dtype=torch.bool, device=keep_tokens.device)
        self.allowed = (keep_tokens[:, None, :] | eye)[:, None]  # (B, 1, N, N)
        self.patch_weights = patch_weights
        self.num_prefix_tokens = num_prefix_tokens
        self.trace_ends = patch_weights is not None

    def _hook(self, layer: int, scores: Tensor) -> Tensor:
        return scores.masked_fill(~self.allowed, float("-inf"))

    def fused_attention(
        self, layer: int, q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Mask
    ) -> Optional[Tensor]:
        """The masked attention through torch's fused kernel: a boolean mask
        (True = may attend) is the ``-inf`` on the held-out keys (with
        dropout or talking heads, :meth:`attention` runs the explicit
        softmax and the mask enters through ``score_hook``)."""
        allowed = self.allowed
        if mask is not None:
            if mask.dtype == torch.bool:
                allowed = allowed & mask
            else:
                bias = torch.zeros_like(mask).masked_fill(~allowed, float("-inf"))
                allowed = mask + bias
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)

    def pool(self, x: Tensor, weights: Tensor) -> Tensor:
        """The patch mean over the kept patches only; a class-token read
        (weights zero on every patch, DINOv2's first half) is unchanged."""
        if self.patch_weights is None or not weights[self.num_prefix_tokens :].any():
            return super().pool(x, weights)
        return torch.einsum("bn,bnd->bd", self.patch_weights.to(x.dtype), x)
