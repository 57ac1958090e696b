"""AGCAM: attention-guided CAM (Leem & Seo, AAAI 2024)."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..adapters import Tracer
from ._base import ViTAttribution, check_choice
from ._registry import register_method

_REDUCTIONS: Dict[str, Callable[..., Tensor]] = {
    "sum": torch.sum,
    "mean": torch.mean,
    "max": torch.amax,
    "min": torch.amin,
}


class _DetachedAttentionInput(Tracer):
    """Records the pre-softmax scores and the attention probabilities of
    every layer, the probabilities as leaves of the autograd graph, and cuts
    the gradient through the attention's input (queries, keys and values are
    detached), as the authors' model does with ``x.detach()``."""

    def __init__(self) -> None:
        super().__init__(keep_attention=True, keep_scores=True)

    def attention_inputs(
        self, layer: int, q: Tensor, k: Tensor, v: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        return q.detach(), k.detach(), v.detach()

    def softmax(self, layer: int, scores: Tensor) -> Tensor:
        return super().softmax(layer, scores).requires_grad_(True)


@register_method("agcam")
class AGCAM(ViTAttribution):
    r"""Attention-Guided CAM of Leem and Seo (AAAI 2024, "Attention Guided
    CAM: Visual Explanations of Vision Transformer Guided by Self-Attention",
    https://arxiv.org/abs/2402.04563; the authors' code:
    https://github.com/LeemSaebom/Attention-Guided-CAM-Visual-Explanations-of-Vision-Transformer-Guided-by-Self-Attention).

    Every head's *pre-softmax* attention scores are squashed by a sigmoid and
    weighted by the positive part of the gradient of the target logit with
    respect to the head's attention probabilities; the explained row (the
    class token's) is summed over heads and layers:

    .. math::
        \mathrm{AGCAM}_j = \sum_{l=1}^{L} \sum_{h=1}^{H}
            \mathrm{ReLU}\!\left(\frac{\partial y_t}
                {\partial A^{(l)}_{h,\,\mathrm{cls}\,j}}\right)
            \sigma\!\left(S^{(l)}_{h,\,\mathrm{cls}\,j}\right),
        \qquad
        S^{(l)}_h = \frac{Q^{(l)}_h K^{(l)\top}_h}{\sqrt{d}},\quad
        A^{(l)}_h = \mathrm{softmax}\big(S^{(l)}_h\big),

    over patch columns :math:`j`.

    Choices, read from the authors' code (``Methods/AGCAM/AGCAM.py`` and
    their modified timm ``Attention``):

    * **The gradient skips the attention's input.** The authors' attention
      modules detach their input, so the gradient reaches
      :math:`A^{(l)}` only through the residual stream and the MLPs of the
      later blocks (their comment: :math:`\partial E^{(k+1)} / \partial
      E^{(k)} = I` for the attention branch). The same is done here by
      detaching the queries, keys and values of every layer.
    * The row is the class token's (the first row); for average-pooled
      models the mean of the patch rows, for distilled DeiT the mean of the
      class and distillation rows.
    * ``head_reduction`` and ``layer_reduction`` are the authors'
      ``head_fusion`` and ``layer_fusion``: reductions over heads, then over
      layers, ``"sum"`` by default (renamed because the ``head_fusion`` of the
      other methods of this package has no sum).
    * The authors min-max normalise the map for display and evaluation; this
      method returns the sum above.

    Agreement with the authors' code (their ``AGCAM`` class on their modified
    timm ViT, loaded with the weights of a tiny random timm ViT; outputs kept
    in ``tests/attr/data/agcam`` with the script that made them): identical
    maps in float32, for the predicted and a given class, with the default
    reductions and with mean over heads / max over layers.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        head_reduction (str, optional): ``"sum"``, ``"mean"``, ``"max"`` or
            ``"min"`` over heads. Default: ``"sum"``
        layer_reduction (str, optional): the same over layers. Default: ``"sum"``
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> attr = cv.AGCAM(model).attribute(torch.randn(1, 3, 224, 224), target=3)
    """

    _plain_only = (
        "AGCAM sums, over heads and layers, the sigmoid of the explained row of "
        "each layer's pre-softmax scores over one token set; this model's "
        "layers score only within windows, over token sets that change at "
        "every patch merging"
    )
    _no_class_attention = (
        "AGCAM sums, over every layer, the class token's row of the "
        "pre-softmax scores (sigmoid) times its gradient; CaiT's "
        "self-attention layers have no class token (it joins only in the "
        "class-attention layers), so the sum has no row in them, and their "
        "scores are talking-heads mixtures whose sigmoid is not a score of "
        "one head"
    )

    _needs_grad = True

    def __init__(
        self,
        model: nn.Module,
        head_reduction: str = "sum",
        layer_reduction: str = "sum",
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        choices = tuple(_REDUCTIONS)
        self.head_reduction = check_choice("head_reduction", head_reduction, choices)
        self.layer_reduction = check_choice("layer_reduction", layer_reduction, choices)

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        tracer, _, _, grads = self._trace(
            inputs, target, args, _DetachedAttentionInput(), grad=True
        )
        assert grads is not None  # grad=True
        layers = sorted(tracer.attentions)
        maps = []
        for i, g in zip(layers, grads):
            cam = g.clamp(min=0) * tracer.scores[i].detach().sigmoid()  # (B, H, N, N)
            B, H, N, _ = cam.shape
            row = self._patch_row(cam.reshape(B * H, N, N), tracer).reshape(B, H, -1)
            maps.append(_REDUCTIONS[self.head_reduction](row, dim=1))
        return _REDUCTIONS[self.layer_reduction](torch.stack(maps), dim=0)
