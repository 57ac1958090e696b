"""Grad-ECLIP (Zhao et al., ICML 2024): channel and spatial importance of the
attention that forms the image embedding."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..adapters import Tracer
from ._base import ViTAttribution
from ._registry import register_method


class _QKVOTracer(Tracer):
    """Records the queries, keys, values and attention output (in the graph)
    of one layer (or of the pooling attention, ``Tracer.POOL``)."""

    def __init__(self, layer: int) -> None:
        explicit = [] if layer == Tracer.POOL else [layer]
        super().__init__(keep_attention=False, layers=explicit)
        self.layer = layer
        self.kept: Dict[str, Tensor] = {}

    def qk(self, layer: int, q: Tensor, k: Tensor, scale: float) -> Tensor:
        if layer == self.layer:
            self.kept["q"], self.kept["k"] = q, k
        return super().qk(layer, q, k, scale)

    def av(self, layer: int, attn: Tensor, v: Tensor) -> Tensor:
        out = super().av(layer, attn, v)
        if layer == self.layer:
            self.kept["v"], self.kept["o"] = v, out
        return out


def _min_max(x: Tensor) -> Tensor:
    """Min-max over the last axis (a constant row becomes zeros)."""
    low = x.amin(dim=-1, keepdim=True)
    span = x.amax(dim=-1, keepdim=True) - low
    return torch.where(span > 0, (x - low) / span.clamp_min(1e-30), torch.zeros_like(x))


@register_method("grad_eclip")
class GradECLIP(ViTAttribution):
    r"""Grad-ECLIP of Zhao, Wang, Zeng, Zhao and Chan, "Gradient-based Visual
    Explanation for Transformer-based CLIP", ICML 2024
    (https://proceedings.mlr.press/v235/zhao24p.html; extended as
    "Grad-ECLIP: Gradient-based Visual and Textual Explanations for CLIP",
    https://arxiv.org/abs/2502.18816; code github.com/Cyang-Zhao/Grad-Eclip).

    The image embedding is read from the outputs of the last attention at the
    queries the pooling reads: the class token's row of the last block
    (class-token models, as CLIP), every patch row (average pooling), or the
    probe(s) of the attention-pooling head (SigLIP, open_clip's attentional
    pooler, timm ``global_pool="map"``). Each such output is a weighted sum of
    the value vectors, :math:`o_q = \sum_j A_{qj} v_j`; Grad-ECLIP replaces
    the (sparse) softmax weights by a loosened spatial importance and weights
    the value channels by the gradient of the score:

    .. math::
        w_{q,c} = \frac{\partial y_t}{\partial o_{q,c}}, \qquad
        \lambda_{h,q,j} = \mathrm{minmax}_j\,
            \cos\!\big(q_{h,q},\, k_{h,j}\big), \qquad
        E_j = \mathrm{ReLU}\Big(\sum_{q}\sum_{h}\sum_{c \in h}
            w_{q,c}\,\lambda_{h,q,j}\, v_{j,c}\Big)

    for patch tokens :math:`j` (the min-max runs over the patch keys), with
    :math:`c \in h` the value channels of head :math:`h` and :math:`q` the
    queries the pooled vector reads (one for CLIP); :math:`y_t` is the target
    output (for CLIP, the image-text score of prompt :math:`t`:
    :func:`~captum_vit.text_similarity`). The gradient is taken once, through
    the part of the network after that attention.

    **Heads.** The authors' code recomputes the last attention as a *single*
    head over the whole width (``attention_layer(q, k, v, num_heads=1)``),
    which is not the function the model computes (CLIP ViT-B has 12 heads).
    Here the model's own heads are kept: the cosine is taken per head, and each
    head's spatial weights scale that head's channels. On a layer with one
    head both are the same: on a tiny CLIP with a one-head last layer the
    maps equal those of the authors' ``grad_eclip`` function (their notebook
    ``grad_eclip_image.ipynb``) to float precision (tests/attr/data/grad_eclip).
    The cosine is taken between the raw query and key projections (their
    notebook; their evaluation script passes them through the output
    projection first).

    For average-pooled models (not in the paper) the sum runs over every
    patch query, each with its own spatial weights.

    **Class-attention models (CaiT).** The embedding is the class token, and
    the last attention that forms it is the last class-attention layer's,
    whose only query is the class token: :math:`o_{\mathrm{cls}} = \sum_j
    A_{\mathrm{cls},j} v_j` over ``[class token; patches]``, the same sum as
    a ViT's class row, so the formula applies unchanged: :math:`q` is that
    layer's projection of the (normed) class token, :math:`k_j, v_j` its key
    and value projections of the normed patch tokens the self-attention phase
    outputs (which every class-attention layer reads unchanged), the min-max
    over the patch keys (the class token's own key dropped, as on a ViT).
    These layers have no talking heads: the heads are the model's.
    ``layer`` may name an earlier class-attention layer (its class query,
    read the same way); a self-attention layer is refused when explained
    (``ValueError``): none of its queries is the class token (it joins
    after that phase), so no output of it is the pooled query's.

    Args:
        model (torch.nn.Module): a CLIP-style model, a similarity model
            (:func:`~captum_vit.text_similarity`) or a ViT classifier (CaiT
            included).
        layer (int, optional): the block whose attention is read (at the
            queries the pooling reads); None: the last block, or the pooling
            attention of an attention-pooled model. Default: None
        spatial (bool, optional): use the spatial importance
            :math:`\lambda` (the authors' ``withksim``); False: :math:`\lambda
            = 1`. Default: True
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> sim = cv.text_similarity(clip, ["a red disk", "a blue ring"], tokenizer)
        >>> maps = cv.GradECLIP(sim).attribute(transform(images), target=1)
    """

    _plain_only = (
        "Grad-ECLIP weighs the values of the last attention by the cosine of the "
        "pooled queries with every patch key; this model's attention is "
        "windowed (a query sees its window's keys only) over a grid made by "
        "patch merging"
    )
    _class_attention = True

    _needs_grad = True

    def __init__(
        self,
        model: nn.Module,
        layer: Optional[int] = None,
        spatial: bool = True,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        pooling = self.adapter.pooling
        if pooling == "attention" and layer is not None:
            raise ValueError(
                "an attention-pooled model forms its embedding in the pooling "
                "attention: leave layer=None"
            )
        self.layer = Tracer.POOL if pooling == "attention" else self._layer_index(layer)
        self.spatial = bool(spatial)

    def _queries(self, tracer: Tracer, num_tokens: int) -> Sequence[int]:
        if self.layer == Tracer.POOL:
            return list(tracer.pool_queries)
        w = self.adapter.pool_weights(num_tokens)
        return torch.nonzero(w).flatten().tolist()

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        if self.adapter.class_attention:
            if self._graph(inputs).layers[self.layer].queries is None:
                raise ValueError(
                    f"GradECLIP reads the pooled query's output of block "
                    f"{self.layer}, a self-attention block of "
                    f"{type(self.model).__name__}: none of its queries is the "
                    "class token the model pools (it joins in the "
                    "class-attention blocks); choose a class-attention block "
                    "(the default, the last block)"
                )
        tracer = _QKVOTracer(self.layer)
        with torch.enable_grad(), self.adapter.trace(tracer):
            out = self.adapter.forward(inputs.detach().requires_grad_(True), *args)
        if target is None:
            target = out.detach().argmax(dim=-1)
        kept = tracer.kept
        with torch.enable_grad():
            score = out.gather(1, target.to(out.device)[:, None]).sum()
            (grad,) = torch.autograd.grad(score, kept["o"])  # (B, H, Q, d)
        q, k, v = (kept[n].detach() for n in "qkv")
        first = tracer.pool_first_key if self.layer == Tracer.POOL else 0
        npre = self.adapter.num_prefix_tokens
        rows = self._queries(tracer, first + k.shape[2])
        skip = max(npre - first, 0)  # prefix keys (none for timm's pooling)
        k, v = k[:, :, skip:], v[:, :, skip:]
        # sum over the read queries r, heads h and channels c of head h:
        # w_{r,c} lambda_{h,r,j} v_{j,c}
        g, q = grad[:, :, rows], q[:, :, rows]  # (B, H, R, d)
        inner = g @ v.transpose(-1, -2)  # (B, H, R, P)
        if self.spatial:
            cos = F.cosine_similarity(q[:, :, :, None], k[:, :, None], dim=-1)
            inner = inner * _min_max(cos)
        return inner.sum(dim=(1, 2)).clamp(min=0)
