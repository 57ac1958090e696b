"""Beyond Intuition: token attributions inside Transformers (Chen et al., 2023)."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..adapters import Tracer
from ._base import ViTAttribution, check_choice
from ._registry import register_method
from .tam import check_steps, integrated_attention_gradient

__all__ = ["BeyondIntuition"]

_MODES = ("token", "head")


@register_method("beyond_intuition")
class BeyondIntuition(ViTAttribution):
    r"""Bidirectional explanations of Chen, Li, Zhao, Wang and Wang,
    "Beyond Intuition: Rethinking Token Attributions inside Transformers"
    (TMLR 2023, https://openreview.net/forum?id=rm0zIzlhcX).

    **Attention perception** approximates how tokens mix from ``start_layer``
    :math:`s` to the last block :math:`L-1` by a recurrence that starts at
    :math:`P = I` and, for every block, adds the block's mixing applied to
    what came before, :math:`P \leftarrow P + \tilde A^{(l)} P`, with one of
    two approximations of :math:`\tilde A^{(l)}`:

    * ``mode="head"`` (head-wise): heads weighted by the normalised mean
      absolute entry of :math:`A_h^\top \nabla A_h`,

      .. math::
          I_h = \operatorname{mean}_{ij}
              \left|\left(A_h^{(l)\top} \tfrac{\partial y_t}
              {\partial A_h^{(l)}}\right)_{ij}\right|, \qquad
          \tilde A^{(l)} = \sum_h \frac{I_h}{\sum_{h'} I_{h'}} A^{(l)}_h

    * ``mode="token"`` (token-wise): the head mean times the norm ratio of
      every token's value-and-projection output to its block input,

      .. math::
          \tilde A^{(l)} = \bar A^{(l)} \operatorname{diag}
              \!\left(\frac{\lVert V^{(l)}_j W_O^{(l)\top}\rVert}
              {\lVert z^{(l)}_j\rVert}\right)_j

      where :math:`V_j` is token :math:`j`'s value (all heads concatenated,
      bias included), :math:`W_O` the attention output projection (its bias
      left out) and :math:`z_j` the block input.

    **Reasoning feedback** weights the result by the positive part of the
    head-averaged integrated gradient of the target logit w.r.t. the last
    attention map (as in :class:`~captum_vit.TAM`):

    .. math::
        \phi = e_{\mathrm{cls}}^\top \left( \mathbb{E}_h\!\left[
            \left(\tfrac{1}{m}\textstyle\sum_k \nabla A^{(L-1)}_h
            (\tfrac{k}{m-1} x)\right)^{+}\right] \odot P \right)

    read at the patch columns.

    Choices, following the authors' code (github
    jiaminchen-1031/transformerinterp, ``generate_ours`` and
    ``generate_ours_c``) and InterpretDL's ``BTCVInterpreter``: gradients
    are of the target **logit** (the authors; InterpretDL's image interpreter
    defaults to the softmax probability); the head weights :math:`I_h` are
    normalised per sample over heads (the authors' code normalises over
    batch and heads together and only runs with one image); the recurrence
    runs from ``start_layer`` to the last block inclusive, with
    ``start_layer`` defaulting to a quarter of the depth (3 for 12 blocks,
    the references' default); the integrated gradient uses a zero baseline
    and ``linspace(0, 1, steps)``; the map is read at the class-token row
    (for average-pooled models, the mean over patch rows, as InterpretDL
    does for global-pool models). Run on the same weights (a 4-block random
    ViT, CPU, float32), the authors' ``generate_ours`` / ``generate_ours_c``
    and this class agreed to :math:`1.5 \cdot 10^{-7}` relative in both
    modes.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        mode (str, optional): ``"token"`` (token-wise) or ``"head"``
            (head-wise) attention perception. Default: ``"token"``
        start_layer (int, optional): first block of the recurrence; ``None``
            is ``num_layers // 4``. Default: None
        steps (int, optional): points of the integrated gradient.
            Default: 20
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_small_patch16_224").eval()
        >>> bi = cv.BeyondIntuition(model, mode="head")
        >>> attr = bi.attribute(torch.randn(2, 3, 224, 224), output="tokens")
        >>> attr.shape
        torch.Size([2, 14, 14])
    """

    _no_class_attention = (
        "its attention perception multiplies every block's head-weighted "
        "mixing of one token set and reads the class token's row; CaiT's "
        "self-attention blocks have no class token and mix with talking heads "
        "(the head weights of one head are then spread over all heads), and "
        "its token-wise mode needs each token's value norm against its block "
        "input, which the patch tokens, never updated there, do not have in "
        "the class-attention blocks"
    )

    _needs_grad = True

    def __init__(
        self,
        model: nn.Module,
        mode: str = "token",
        start_layer: Optional[int] = None,
        steps: int = 20,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.mode = check_choice("mode", mode, _MODES)
        self.start_layer = self._layer_index(start_layer, self.adapter.num_layers // 4)
        self.steps = check_steps(steps)

    def _perception_head(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tuple[List[Tensor], Tensor, Tracer]:
        tracer = Tracer(layers=range(self.start_layer, self.adapter.num_layers))
        tracer, _, label, grads = self._trace(inputs, target, args, tracer, grad=True)
        assert grads is not None  # grad=True
        mixes = []
        for attn, grad in zip(tracer.attention_list(), grads):  # start_layer, ...
            attn = attn.detach()
            importance = (attn.transpose(-1, -2) @ grad).abs().mean(dim=(-1, -2))
            importance = importance / importance.sum(dim=-1, keepdim=True)
            mixes.append(torch.einsum("bh,bhij->bij", importance, attn))
        return mixes, label, tracer

    def _perception_token(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tuple[List[Tensor], Tensor, Tracer]:
        layers = range(self.start_layer, self.adapter.num_layers)
        tracer = Tracer(keep_values=True, keep_blocks=True, layers=layers)
        tracer, _, label, _ = self._trace(inputs, target, args, tracer=tracer)
        mixes = []
        for layer in layers:
            attn = tracer.attentions[layer]
            z = tracer.block_inputs[layer].detach()
            v = tracer.values[layer].detach()
            B, H, N, d = v.shape
            v = v.transpose(1, 2).reshape(B, N, H * d)
            weight = self.adapter.block_parts(layer).proj.weight
            assert isinstance(weight, Tensor)  # the projection: a linear layer
            # values recorded under autocast are half, the weight is not
            dtype = torch.promote_types(v.dtype, weight.dtype)
            proj = v.to(dtype) @ weight.detach().T.to(dtype)
            ratio = proj.norm(dim=-1) / z.norm(dim=-1)
            mixes.append(attn.detach().mean(dim=1) * ratio[:, None, :])
        return mixes, label, tracer

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        if self.mode == "head":
            mixes, label, tracer = self._perception_head(inputs, target, args)
        else:
            mixes, label, tracer = self._perception_token(inputs, target, args)
        B, N, _ = mixes[0].shape
        P = torch.eye(N, dtype=mixes[0].dtype, device=mixes[0].device).expand(B, N, N)
        for mix in mixes:
            P = P + mix @ P
        grad = integrated_attention_gradient(self, inputs, label, args, self.steps)
        feedback = grad.clamp(min=0).mean(dim=1)
        return self._patch_row(feedback * P, tracer)
