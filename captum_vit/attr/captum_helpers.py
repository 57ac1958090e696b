"""Captum's own methods on Vision Transformers, one line each.

* :func:`forward_func` — logits for any family (Hugging Face returns an output
  object), so ``IntegratedGradients(forward_func(model))`` works as is;
* :func:`patch_feature_mask` — one feature id per patch, for
  ``FeatureAblation``, ``KernelShap``, ``Lime``, ``ShapleyValueSampling``;
* :func:`patch_window` — the ``sliding_window_shapes`` / ``strides`` of
  ``Occlusion`` that occlude exactly one patch at a time;
* :func:`to_tokens` — any pixel attribution onto the patch grid, the
  ``output="tokens"`` view of the ViT methods;
* :class:`ViTGradCam` — Grad-CAM on a block output with the token-to-grid
  reshape done from the model's own grid (prefix tokens dropped, any size).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import adapters
from .._maps import pixels_to_tokens
from ..adapters import Tracer, ViTAdapter
from ._base import ViTAttribution
from ._graph import patch_scores, to_stage
from ._registry import register_method

__all__ = [
    "forward_func",
    "patch_feature_mask",
    "patch_window",
    "to_tokens",
    "ViTGradCam",
]

ModelOrAdapter = Union[nn.Module, ViTAdapter]


def _adapter(model: ModelOrAdapter) -> ViTAdapter:
    return adapters.get(model)


def _image(inputs: Union[Tensor, Tuple[Tensor, ...]]) -> Tensor:
    if isinstance(inputs, tuple):
        inputs = inputs[0]
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        raise ValueError("inputs must be a batch of images (B, C, H, W)")
    return inputs


def forward_func(model: ModelOrAdapter) -> Callable[..., Tensor]:
    """A forward function returning the logits tensor ``(B, classes)``.

    For timm and torchvision models this is the model's own output; for
    Hugging Face models it is ``model(x).logits``. Pass it to any Captum
    method or metric that takes a ``forward_func``.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.

    Examples::

        >>> from captum.attr import IntegratedGradients
        >>> ig = IntegratedGradients(cv.forward_func(hf_model))
        >>> attr = ig.attribute(images, target=labels, n_steps=32)
    """
    return _adapter(model).forward


def _patch_index(adapter: ViTAdapter, inputs: Tensor) -> Tuple[Tensor, int, int]:
    H, W = inputs.shape[-2:]
    adapter.check_image_size((H, W))
    gh, gw = adapter.grid_size((H, W))
    ph, pw = adapter.patch_size
    rows = (torch.arange(H, device=inputs.device) // ph).clamp(max=gh - 1)
    cols = (torch.arange(W, device=inputs.device) // pw).clamp(max=gw - 1)
    return rows[:, None] * gw + cols[None, :], gh, gw


def patch_feature_mask(
    model: ModelOrAdapter, inputs: Union[Tensor, Tuple[Tensor, ...]]
) -> Tensor:
    """A Captum ``feature_mask`` with one feature id per patch.

    Pixel ``(y, x)`` gets id ``(y // ph) * gw + (x // pw)`` on every channel,
    so the features Captum perturbs together are exactly the model's tokens
    (pixels beyond the last full patch join the nearest patch).

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        inputs (Tensor): images ``(B, C, H, W)``.

    Returns:
        Tensor: long mask ``(1, C, H, W)``, broadcastable to ``inputs``.

    Examples::

        >>> from captum.attr import KernelShap
        >>> mask = cv.patch_feature_mask(model, images)
        >>> attr = KernelShap(model).attribute(
        ...     images, target=labels, feature_mask=mask, n_samples=200)
    """
    x = _image(inputs)
    idx, _, _ = _patch_index(_adapter(model), x)
    return idx[None, None].expand(1, x.shape[1], *idx.shape).contiguous()


def patch_window(
    model: ModelOrAdapter, inputs: Union[Tensor, Tuple[Tensor, ...]]
) -> Tuple[int, int, int]:
    """``(C, ph, pw)``: Captum ``Occlusion``'s ``sliding_window_shapes`` and
    ``strides`` that occlude one patch (all channels) per step.

    Examples::

        >>> from captum.attr import Occlusion
        >>> win = cv.patch_window(model, images)
        >>> attr = Occlusion(model).attribute(
        ...     images, target=labels, sliding_window_shapes=win, strides=win)
    """
    x = _image(inputs)
    ph, pw = _adapter(model).patch_size
    return (int(x.shape[1]), int(ph), int(pw))


def to_tokens(
    attr: Union[Tensor, Tuple[Tensor, ...]],
    model: ModelOrAdapter,
    reduce: str = "sum",
) -> Tensor:
    """Pool a pixel attribution ``(B, C, H, W)`` onto the patch grid.

    Sums (or averages) over the channels and pixels of each patch, giving the
    ``(B, gh, gw)`` map that the ViT methods return for ``output="tokens"``.
    For a patch-constant attribution (``FeatureAblation``/``KernelShap`` with
    :func:`patch_feature_mask`, ``Occlusion`` with :func:`patch_window`),
    ``reduce="mean"`` over one channel recovers the per-patch value. Where the
    patch grid does not tile the image, pixels the model drops (past the last
    full patch) belong to no token, and a padded border patch pools the image
    pixels it covers (the border rule of :func:`~captum_vit.attr.tokens_to_pixels`).

    Args:
        attr (Tensor): pixel attribution ``(B, C, H, W)``.
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        reduce (str, optional): ``"sum"`` or ``"mean"``. Default: ``"sum"``
    """
    a = _image(attr)
    adapter = _adapter(model)
    size = (int(a.shape[-2]), int(a.shape[-1]))
    adapter.check_image_size(size)
    return pixels_to_tokens(a, adapter.grid_size(size), adapter.patch_size, reduce)


@register_method("vit_gradcam")
class ViTGradCam(ViTAttribution):
    r"""Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391)
    on the token output of a transformer block, the ViT version of Captum's
    :class:`~captum.attr.LayerGradCam`.

    With :math:`T \in \mathbb{R}^{P \times D}` the patch tokens entering
    block ``layer`` (prefix tokens dropped) and :math:`y_t` the target
    logit, the channel weights are the gradients averaged over the patch
    tokens and the map is their weighted channel sum, rectified:

    .. math::
        \alpha_d = \frac{1}{P}\sum_{p} \frac{\partial y_t}{\partial T_{pd}},
        \qquad
        \mathrm{cam}_p = \mathrm{ReLU}\Big(\sum_d \alpha_d\, T_{pd}\Big)

    This is Captum's ``LayerGradCam`` computation (mean gradient over the
    spatial axes, weighted sum over channels, optional ReLU) with the
    ``(B, N, D)`` tokens read as a ``(B, D, gh, gw)`` feature map: the grid
    comes from the model (any image size, any number of prefix tokens) —
    no fixed ``14 x 14`` reshape (pytorch-grad-cam#76). Applying Captum's
    ``LayerGradCam`` to a block directly would average the wrong axes.

    Which tokens: by default the block's *input* (the previous block's
    output), as pytorch-grad-cam's recommended ViT target
    ``blocks[-1].norm1`` reads the last block's input. The last block's
    *output* is useless in a class-token model: only its class token reaches
    the head, so the patch gradients there are exactly zero.
    ``attribute_to_layer_input=False`` uses the block output (meaningful for
    average-pooled models or earlier blocks), as in Captum's argument.

    Hierarchical models (Swin): the tokens are those of the block's stage
    (its grid, the mean over its tokens) and the map is carried to the first
    stage's grid by the merge maps (each token's score shared equally by the
    first-stage tokens it was made from; ``docs/token_graph.rst``).

    Class-attention models (CaiT): a class-attention block updates only the
    class token, its only query; the patch tokens pass it unchanged. The
    tokens of such a block, input or output, are therefore the patch tokens
    leaving the last self-attention block, the ones every class-attention
    layer reads as keys and values: the default ``layer=-1`` is Grad-CAM on
    them, with the gradients of the target through all the class-attention
    layers (the token graph says which layers have a query subset,
    ``docs/token_graph.rst``, "CaiT: two phases"). A self-attention
    ``layer`` reads that block's own input or output, as on a ViT.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        layer (int, optional): the block whose input (or output) is used;
            negative counts from the end. Default: -1
        attribute_to_layer_input (bool, optional): use the block's input
            tokens (True) or its output tokens (False). Default: True
        relu_attributions (bool, optional): apply the ReLU of Grad-CAM
            (Captum's ``LayerGradCam`` default is False). Default: True
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> cam = cv.ViTGradCam(model, layer=-1)
        >>> cam.attribute(torch.randn(2, 3, 224, 224), output="tokens").shape
        torch.Size([2, 14, 14])
    """

    _needs_grad = True
    _any_graph = True
    _class_attention = True

    def __init__(
        self,
        model: nn.Module,
        layer: int = -1,
        attribute_to_layer_input: bool = True,
        relu_attributions: bool = True,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.layer = self._layer_index(layer)
        self.attribute_to_layer_input = attribute_to_layer_input
        self.relu_attributions = relu_attributions

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        tracer = Tracer(keep_attention=False, keep_blocks=True, layers=())
        # the input requires grad so the block output is in the graph even for
        # a frozen model; only autograd.grad is used: no .grad is written
        with torch.enable_grad(), self.adapter.trace(tracer):
            x = inputs.detach().requires_grad_(True)
            logits = self.adapter.forward(x, *args)
            if target is None:
                target = logits.detach().argmax(dim=-1)
            graph = self._graph(inputs)
            out, stage = self._grid_tokens(
                tracer, graph, self.layer, output=not self.attribute_to_layer_input
            )
            score = logits.gather(1, target.to(logits.device)[:, None]).sum()
            (grad,) = torch.autograd.grad(score, out)
        npre = graph.stages[stage].num_prefix_tokens
        tokens, grad = out.detach()[:, npre:], grad[:, npre:]
        cam = (grad.mean(dim=1, keepdim=True) * tokens).sum(-1)
        cam = F.relu(cam) if self.relu_attributions else cam
        if stage == 0:
            return cam
        full = F.pad(cam, (npre, 0))  # zeros for the stage's prefix tokens
        return patch_scores(graph, to_stage(graph, full, stage))
