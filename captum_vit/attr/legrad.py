"""LeGrad (Bousselham et al., 2024): feature-formation sensitivity."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor, nn

from .._maps import min_max
from ..adapters import Tracer
from ._base import ViTAttribution, check_choice
from ._registry import register_method

_POOLINGS = ("mean", "model")


@register_method("legrad")
class LeGrad(ViTAttribution):
    r"""LeGrad of Bousselham, Boggust, Chaybouti, Strobelt and Kuehne, "LeGrad:
    An Explainability Method for Vision Transformers via Feature Formation
    Sensitivity" (2024, https://arxiv.org/abs/2404.03214; code:
    github.com/WalBouss/LeGrad, the ``legrad-torch`` package).

    Every layer :math:`l \ge s` is read out as if it were the last: its
    tokens :math:`Z^l` go through the model's head (final norm, pooling,
    projection; for a similarity model, the similarity to the prompt) to a
    score :math:`y^l_t`, whose gradient with respect to the layer's own
    attention probabilities :math:`A^l` (only the rest of block :math:`l` lies
    between them) is rectified and averaged over heads and queries:

    .. math::
        y^l = \mathrm{head}\big(\mathrm{pool}(Z^l)\big)_t, \qquad
        \hat E^l_j = \frac{1}{H\,N} \sum_{h=1}^{H} \sum_{i=1}^{N}
            \mathrm{ReLU}\!\left(\frac{\partial y^l}{\partial A^l_{h,ij}}\right),
        \qquad
        E = \mathrm{minmax}\Big(\sum_{l=s}^{L-1} \hat E^l\Big)

    at the patch columns :math:`j`; ``output="input"`` upsamples
    :math:`\sum_l \hat E^l` bilinearly and then min-max normalises it over
    the pixels (as ``legrad-torch`` does), ``output="tokens"`` min-max
    normalises the patch grid.

    **Pooling of a layer's tokens.** ``pooling="mean"`` (the default for
    class-token and average-pooled models) averages *all* tokens of the layer,
    class token included, and passes the average through the head, the final
    norm applied to it: what ``legrad-torch`` computes for CLIP towers
    (:math:`\mathrm{normalize}(\mathrm{ln\_post}(\bar Z^l)\,W_{proj})`).
    ``pooling="model"`` uses the model's own pooling (the class token of a
    classifier). For **attention-pooled models** (open_clip's attentional
    pooler, SigLIP, timm ``global_pool="map"``) the pooling head is applied to
    every layer's tokens and the gradient is taken with respect to *its*
    attention probabilities :math:`P^l` (heads :math:`\times` probes
    :math:`\times N`), averaged over heads and the probes the pooled vector
    reads, as ``legrad-torch``'s CoCa and SigLIP branches do; ``pooling``
    does not apply there.

    **Classifiers and similarities.** On a ViT classifier (timm, Hugging
    Face, torchvision) :math:`y^l_t` is the target logit computed from layer
    :math:`l`'s tokens through the model's head; on a similarity model
    (:func:`~captum_vit.text_similarity`) it is the score of prompt
    :math:`t`. The gradient scales with the score (logit scale, cosine): the
    normalised map does not.

    **Agreement with legrad-torch.** On the stored outputs of ``legrad-torch``
    1.1 (tests/attr/data/legrad/: two tiny random-init open_clip models in
    float64, three prompts, two images, the last two and all layers) this
    class gives the same maps to a maximum absolute difference below
    :math:`10^{-12}` (maps in [0, 1]): the class-token tower with
    ``text_similarity(model, prompts, score="cosine")``, the attentional
    pooler (CoCa branch) with ``score="dot"`` and ``final_norm=False`` (that
    branch reads the pooler's output through the projection without
    ``ln_post`` and without normalisation) — also for the sum of several
    prompts, through :func:`~captum_vit.embedding_similarity` of their summed
    embeddings. ``legrad-torch`` explains one image at a time and changes the
    model in place; here batches run in one pass and nothing is changed.

    Args:
        model (torch.nn.Module): a stock Vision Transformer, a CLIP-style
            model (its image embedding) or a similarity model
            (:func:`~captum_vit.text_similarity`).
        start_layer (int, optional): first layer read out; negative values
            count from the end (``-2``: the last two, ``legrad-torch``'s
            ``layer_index`` default; ``0``: every layer). Default: -2
        pooling (str, optional): ``"mean"`` or ``"model"`` (see above; an
            attention-pooled model always uses its pooling head).
            Default: ``"mean"``
        final_norm (bool, optional): apply the model's final norm to each
            layer's pooled tokens. Default: True
        normalize (bool, optional): min-max normalise each map (the
            paper's). Default: True
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import captum_vit as cv
        >>> from captum_vit import zoo
        >>> clip, transform, tokenizer, _ = zoo.load("synthetic_clip")
        >>> sim = cv.text_similarity(clip, ["a red disk", "a blue ring"], tokenizer)
        >>> maps = cv.LeGrad(sim).attribute(transform(images), target=0)
        >>> classifier_maps = cv.LeGrad(vit, start_layer=0).attribute(x, target=3)
    """

    _plain_only = (
        "LeGrad reads every layer's tokens through the model's head as if the "
        "layer were the last; this model's earlier stages have other token sets "
        "and widths (patch merging changes both), which its head cannot take"
    )
    _no_class_attention = (
        "LeGrad reads every layer from start_layer on through the model's "
        "norm and head as if it were the last, a read of that layer's class "
        "token; CaiT's self-attention layers have no class token (it joins "
        "after them), so the head cannot read them, and only the "
        "class-attention layers would remain"
    )

    _needs_grad = True

    def __init__(
        self,
        model: nn.Module,
        start_layer: int = -2,
        pooling: str = "mean",
        final_norm: bool = True,
        normalize: bool = True,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.pooling = check_choice("pooling", pooling, _POOLINGS)
        self.start_layer = self._layer_index(start_layer)
        self.final_norm = bool(final_norm)
        self.normalize = bool(normalize)

    def _pool_weights(self, num_tokens: int, like: Tensor) -> Optional[Tensor]:
        if self.adapter.pooling == "attention" or self.pooling == "model":
            return None
        return torch.full((num_tokens,), 1.0 / num_tokens).to(like)

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        L = self.adapter.num_layers
        layers = range(self.start_layer, L)
        tracer = Tracer(keep_blocks=True, layers=layers)
        # one forward in the graph (the input requires grad so that a frozen
        # model's attention is in it too); no backward through the model
        with torch.enable_grad(), self.adapter.trace(tracer):
            out = self.adapter.forward(inputs.detach().requires_grad_(True), *args)
        if target is None:
            target = out.detach().argmax(dim=-1)
        target = target.to(out.device)
        npre = self.adapter.num_prefix_tokens
        total: Optional[Tensor] = None
        with torch.enable_grad():
            for layer in layers:
                tokens = tracer.block_outputs[layer]
                head = Tracer(keep_attention=False)
                out = self.adapter.head_forward(
                    tokens,
                    self._pool_weights(tokens.shape[1], tokens),
                    self.final_norm,
                    head,
                )
                score = out.gather(1, target[:, None]).sum()
                emap = self._layer_map(score, tracer.attentions[layer], head)
                total = emap if total is None else total + emap
        assert total is not None
        return total[:, npre:]

    @staticmethod
    def _layer_map(score: Tensor, attn: Tensor, head: Tracer) -> Tensor:
        """``(B, N)``: the rectified gradient of ``score`` with respect to
        the layer's attention (or its pooling attention), mean over heads and
        queries (or the pooled probes)."""
        pooled = head.pool_attention_probs
        if pooled is None:
            (grad,) = torch.autograd.grad(score, attn, retain_graph=True)
            return grad.clamp(min=0).mean(dim=(1, 2))
        (grad,) = torch.autograd.grad(score, pooled, retain_graph=True)
        rows: List[int] = list(head.pool_queries)
        grad = grad[:, :, rows].clamp(min=0).mean(dim=(1, 2))
        return torch.nn.functional.pad(grad, (head.pool_first_key, 0))

    def _format_tokens(self, scores: Tensor, inputs: Tensor, output: str) -> Tensor:
        out = super()._format_tokens(scores, inputs, output)
        return min_max(out) if self.normalize else out
