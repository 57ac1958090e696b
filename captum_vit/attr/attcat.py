"""AttCAT: attentive class activation tokens (Qiang et al., NeurIPS 2022)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..adapters import Tracer
from ._base import ViTAttribution, check_choice
from ._registry import register_method

_QUERIES = ("all", "class")


@register_method("attcat")
class AttCAT(ViTAttribution):
    r"""Attentive Class Activation Tokens of Qiang, Pan, Li, Li, Jang and Zhu
    (NeurIPS 2022, "AttCAT: Explaining Transformers via Attentive Class
    Activation Tokens", https://proceedings.neurips.cc/paper_files/paper/2022/
    hash/20e45668fefa793bd9f2edf19be12c4b-Abstract-Conference.html; code
    https://github.com/qiangyao1988/AttCAT).

    With :math:`h^{(l)}_i \in \mathbb{R}^D` token :math:`i` entering block
    :math:`l` (the residual stream, so the skip connections are part of the
    explanation) and :math:`y_t` the target logit, the *class activation
    token* is the gradient-times-activation of the token, summed over
    features, and it is weighted by the attention the token receives:

    .. math::
        \mathrm{CAT}^{(l)}_i = \sum_{d=1}^{D}
            \frac{\partial y_t}{\partial h^{(l)}_{i,d}}\, h^{(l)}_{i,d},
        \qquad
        \mathrm{AttCAT}_i = \sum_{l=1}^{L} \alpha^{(l)}_i\,
            \mathrm{CAT}^{(l)}_i,
        \qquad
        \alpha^{(l)}_i = \frac{1}{HN}\sum_{h=1}^{H}\sum_{q=1}^{N}
            A^{(l)}_{h,\,q i},

    with :math:`A^{(l)}_h` the attention probabilities of block :math:`l`'s
    head :math:`h` (rows are queries). The map keeps its sign (no ReLU).

    Choices where the paper leaves room (it is written for text
    classifiers; read from the authors' code, ``generate_TransCAM`` in their
    notebooks):

    * :math:`h^{(l)}` is the *input* of block :math:`l` (the Hugging Face
      ``hidden_states[l]``, :math:`l = 0 \dots L-1`: the embeddings and the
      outputs of all blocks but the last);
    * :math:`\alpha^{(l)}` is the attention averaged over heads and then over
      all queries (``query="all"``), the column mean of the attention
      matrix; ``query="class"`` takes the explained row instead (the class
      token's row; the mean of the patch rows for average-pooled models),
      which is how the other methods of this package read a ViT's attention;
    * the gradient is that of the target *logit*; prefix tokens are dropped
      from the map.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        query (str, optional): ``"all"`` or ``"class"``, see above.
            Default: ``"all"``
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> attr = cv.AttCAT(model).attribute(torch.randn(1, 3, 224, 224), target=3)
    """

    _plain_only = (
        "AttCAT sums, over the blocks, each token's gradient x activation "
        "weighted by the attention it receives from every query of one token "
        "set; this model's blocks work on different token sets (stages joined "
        "by patch merging) and attend within windows only"
    )
    _no_class_attention = (
        "AttCAT weighs, block by block, each token's gradient x activation at "
        "the block's input by the attention the token receives there, over "
        "one token sequence that every block updates; CaiT's class-attention "
        "blocks update only the class token (the patches pass them unchanged, "
        "so their gradient x activation at those blocks repeats the last "
        "self-attention block's output) and its self-attention blocks have no "
        "class token"
    )

    _needs_grad = True
    _half_dtypes = ()
    _half_refusal = (
        "its map sums the block inputs times their gradients over the embedding "
        "dimension, a sum that cancels, and float16 or bfloat16 keep every term "
        "to 11 or 8 significant bits (docs/performance.rst, Half precision)"
    )

    def __init__(
        self, model: nn.Module, query: str = "all", interpolate_mode: str = "bilinear"
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.query = check_choice("query", query, _QUERIES)

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        tracer = Tracer(keep_attention=True, keep_blocks=True)
        with torch.enable_grad(), self.adapter.trace(tracer):
            logits = self.adapter.forward(inputs.detach().requires_grad_(True), *args)
            if target is None:
                target = logits.detach().argmax(dim=-1)
            score = logits.gather(1, target.to(logits.device)[:, None]).sum()
            layers = sorted(tracer.block_inputs)
            hidden = [tracer.block_inputs[i] for i in layers]
            grads = torch.autograd.grad(score, hidden)
        npre = self.adapter.num_prefix_tokens
        total = None
        for i, h, g in zip(layers, hidden, grads):
            cat = (g * h.detach()).sum(dim=-1)[:, npre:]  # (B, P)
            attn = tracer.attentions[i].detach().mean(dim=1)  # (B, N, N)
            if self.query == "all":
                alpha = attn.mean(dim=1)[:, npre:]
            else:
                alpha = self._patch_row(attn, tracer)
            total = alpha * cat if total is None else total + alpha * cat
        assert total is not None, "a ViT has at least one block"
        return total
