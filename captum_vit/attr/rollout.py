"""Attention rollout (Abnar & Zuidema, 2020)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import ViTAttribution, check_head_fusion, fuse_heads
from ._registry import register_method


@register_method("rollout")
class AttentionRollout(ViTAttribution):
    r"""Attention rollout of Abnar & Zuidema (ACL 2020,
    https://arxiv.org/abs/2005.00928), as Chefer et al. (CVPR 2021) compute
    their "rollout" baseline.

    Per layer the heads are fused, the identity is added for the residual
    connection and rows are renormalised; the layers are then multiplied with
    later layers on the left:

    .. math::
        \hat A^{(l)} = \frac{\bar A^{(l)} + I}{\mathrm{rowsum}(\bar A^{(l)} + I)},
        \qquad
        J = \hat A^{(L-1)} \cdots \hat A^{(s+1)} \hat A^{(s)}

    and the map is the class-token row of :math:`J` at the patch columns
    (``s = start_layer``). Because attention rows sum to one,
    :math:`\hat A = (\bar A + I)/2` for ``head_fusion="mean"``; with max/min
    fusion or discarding, the row normalisation matters. Unlike
    jacobgil/vit-explain (its issue #16) nothing is divided by column sums.

    ``discard_ratio`` follows vit-explain: per sample and layer, that fraction
    of the smallest entries of the fused matrix :math:`\bar A` is set to zero
    before the identity is added, never the class-token-to-itself entry.
    The result is class-agnostic: ``target`` is ignored.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        head_fusion (str, optional): ``"mean"``, ``"max"`` or ``"min"``.
            Default: ``"mean"``
        discard_ratio (float, optional): fraction in ``[0, 1)`` of the
            smallest fused attention weights dropped per layer (with
            ``discard_ratio > 0``, bfloat16 models are refused: see
            ``docs/performance.rst``, Half precision). Default: 0.0
        start_layer (int, optional): first layer of the product. Default: 0
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> rollout = cv.AttentionRollout(model, head_fusion="max", discard_ratio=0.9)
        >>> attr = rollout.attribute(torch.randn(2, 3, 224, 224), output="tokens")
        >>> attr.shape
        torch.Size([2, 14, 14])
    """

    def __init__(
        self,
        model: nn.Module,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        start_layer: int = 0,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.head_fusion = check_head_fusion(head_fusion)
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
        self.discard_ratio = float(discard_ratio)
        self.start_layer = self._layer_index(start_layer)
        if self.discard_ratio > 0:
            self._half_dtypes = (torch.float16,)
            self._half_refusal = (
                "discard_ratio > 0 zeroes the smallest attention entries, a "
                "ranking that bfloat16's 8 significant bits reorder "
                "(docs/performance.rst, Half precision); discard_ratio=0 "
                "explains bfloat16 models"
            )

    def _discard(self, fused: Tensor) -> Tensor:
        B, N, _ = fused.shape
        k = int(N * N * self.discard_ratio)
        if k == 0:
            return fused
        flat = fused.reshape(B, N * N).clone()
        keep0 = flat[:, 0].clone()
        idx = flat.topk(k, dim=-1, largest=False).indices
        flat.scatter_(1, idx, 0.0)
        flat[:, 0] = keep0
        return flat.reshape(B, N, N)

    def _attribute(self, inputs: Tensor, target, args: tuple) -> Tensor:
        tracer, _, _, _ = self._trace(inputs, target, args)
        attns = tracer.attention_list()[self.start_layer :]
        # (L, B, N, N): fuse heads per layer, then add I and renormalise all
        # layers at once (few kernels: this runs once per call, on GPU too)
        fused = torch.stack([fuse_heads(a.detach(), self.head_fusion) for a in attns])
        if self.discard_ratio > 0:
            fused = self._discard(fused.flatten(0, 1)).view_as(fused)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        hat = fused + eye
        hat = hat / hat.sum(dim=-1, keepdim=True)
        joint = hat[0]
        for a in hat[1:]:
            joint = a @ joint
        return self._patch_row(joint)
