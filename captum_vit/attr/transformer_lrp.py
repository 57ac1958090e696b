"""Transformer attribution (Chefer, Gur, Wolf, CVPR 2021)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ._base import GraphAttribution, check_choice
from ._graph import blocks, compose, patch_scores, pool_row, window_eye
from ._lrp import RelevanceAttribution, RuleSet, relevance_pass
from ._registry import register_method

_METHODS = ("transformer_attribution", "lrp_rollout")


@register_method("transformer_lrp")
class TransformerLRP(RelevanceAttribution, GraphAttribution):
    r"""Transformer attribution of Chefer, Gur and Wolf, "Transformer
    Interpretability Beyond Attention Visualization", CVPR 2021
    (https://arxiv.org/abs/2012.09838), on a stock model.

    An LRP pass with the authors' rules (``layers_ours``: LRP-:math:`\alpha_1
    \beta_0` for linear layers with biases ignored, identity through
    LayerNorm, GELU and softmax, the renormalised residual Add, the z-rule
    Clone at each residual fork, the halving inside both attention matmuls,
    the z-rule for the class-token pooling, relevance starting at one on the
    target logit) gives the relevance :math:`R^{(l)}` arriving at each
    layer's attention probabilities :math:`A^{(l)}` (their ``attn_cam``).
    With :math:`\nabla A^{(l)} = \partial y_t / \partial A^{(l)}` the gradient
    of the target logit:

    .. math::
        \bar A^{(l)} = \mathbb{E}_h\!\left[\left(\nabla A^{(l)}_h \odot
            R^{(l)}_h\right)^{+}\right], \qquad
        C = (\bar A^{(L-1)} + I) \cdots (\bar A^{(s)} + I)

    (later layers multiplied on the left, no row normalisation) and the map
    is the class-token row of :math:`C` at the patch columns. With
    ``method="lrp_rollout"`` the gradient is left out,
    :math:`\bar A^{(l)} = \mathbb{E}_h[(R^{(l)}_h)^+]` (the authors'
    ``method="rollout"`` of ``generate_LRP``, a rollout of LRP relevances —
    not attention rollout).

    Reproduces the reference keys ``transformer_attribution`` and
    ``lrp_relevance_rollout`` of Chefer et al.'s code (``start_layer=0``, their
    notebook default; their evaluation script uses ``start_layer=1``). The
    residual Add renormalisation is taken per sample (their code sums over
    the batch), so batches give each image's batch-1 result.

    On windowed and hierarchical models (Swin; ``docs/token_graph.rst``) the
    relevance pass runs through the window partition, the cyclic shift and
    the padding (index operations: relevance is moved, never changed) and
    through patch merging (the linear rule on the reduction of the
    concatenated 2x2 neighbours, the norm rule on its norm); :math:`\bar
    A^{(l)}` is block-diagonal over the layer's windows, the merge maps enter
    the product and the explained row is the pooling row, read down to the
    first stage's grid. On a plain ViT this is the formula above.

    Args:
        model (torch.nn.Module): a stock timm, Hugging Face or torchvision
            Vision Transformer or Swin, or an adapter wrapping one.
        start_layer (int, optional): first layer of the product. Default: 0
        method (str, optional): ``"transformer_attribution"`` (the paper's
            method) or ``"lrp_rollout"``. Default: ``"transformer_attribution"``
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> lrp = cv.TransformerLRP(model)
        >>> attr = lrp.attribute(torch.randn(2, 3, 224, 224), target=3)
        >>> attr.shape
        torch.Size([2, 3, 224, 224])
        >>> lrp.attribute(torch.randn(2, 3, 224, 224), output="tokens").shape
        torch.Size([2, 14, 14])
    """

    def __init__(
        self,
        model: nn.Module,
        start_layer: int = 0,
        method: str = "transformer_attribution",
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.start_layer = self._layer_index(start_layer)
        self.method = check_choice("method", method, _METHODS)

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        layers = range(self.start_layer, self.adapter.num_layers)
        # one forward: a gradient pass to the attention, then the LRP pass;
        # each layer's (B, H, n, n) relevance is reduced to its map at once
        maps = relevance_pass(
            self.adapter,
            RuleSet(),
            inputs,
            target,
            args=args,
            wrt_input=False,
            layers=layers,
            gradients=self.method == "transformer_attribution",
            reduce=_layer_map,
        ).attention
        # attention pooling: the row of a forward of the same inputs
        graph = self._graph(inputs, self._pooling_tracer(inputs, args))
        ops = {}
        for layer in layers:
            lw = graph.layers[layer]
            cam = blocks(maps[layer], lw)  # (B, nW, n, n)
            ops[layer] = cam + window_eye(lw, cam)
        v = pool_row(
            graph, len(graph.stages) - 1, inputs.shape[0], cam.dtype, cam.device
        )
        return patch_scores(graph, compose(graph, ops, v))


def _layer_map(rel: Tensor, grad: Optional[Tensor]) -> Tensor:
    """``mean_h((grad * rel)+)``, or ``mean_h(rel+)`` without a gradient."""
    cam = rel if grad is None else grad * rel
    return cam.clamp(min=0).mean(dim=1)
