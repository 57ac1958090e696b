"""Partial LRP (Voita et al. 2019) as the baseline of Chefer et al. 2021."""

from __future__ import annotations

from typing import Optional, Union

from torch import Tensor, nn

from ._graph import blocks, patch_scores, pool_row, through_layer, to_stage
from ._lrp import RelevanceAttribution, RuleSet, get_rule_set, relevance_pass
from ._registry import register_method


@register_method("partial_lrp")
class PartialLRP(RelevanceAttribution):
    r"""Partial LRP of Voita, Talbot, Moiseev, Sennrich and Titov, "Analyzing
    Multi-Head Self-Attention", ACL 2019 (https://arxiv.org/abs/1905.09418),
    as the **"partial LRP" baseline** of Chefer, Gur and Wolf (CVPR 2021,
    https://arxiv.org/abs/2012.09838): the LRP relevance that reaches the
    last layer's attention probabilities, positive part, mean over heads,
    class-token row at the patch columns:

    .. math::
        \text{map} = \mathbb{E}_h\!\left[\left(R^{(L-1)}_h\right)^+\right]_{0,\,1:}

    :math:`R^{(L-1)}` is the relevance arriving at :math:`A^{(L-1)}` (the
    halved z-rule of :math:`A V`), from an LRP pass that starts at one on the
    target logit.

    * ``rules="original"`` (default): Chefer et al.'s ``layers_lrp`` rules,
      as their baseline; reproduces the reference key ``partial_lrp``.
    * ``rules="chefer2021"``: their ``layers_ours`` rules; reproduces
      ``last_layer`` (``is_ablation=False``).

    **Class-attention models (CaiT).** The last layer is the last
    class-attention layer, whose only query is the class token: its
    attention is the class row over ``[class token; patches]``, exactly the
    row the method reads on a ViT, and the map is that row's relevance at the
    patch columns (the class token's own column dropped). The relevance
    reaches it from the target logit through the head, the final norm, the
    class token's pooling and the class-attention blocks after it, with the
    same rules as on a ViT (layer scale is an elementwise map: the identity
    rule). CaiT's class-attention layers have no talking heads, so the mean
    runs over the model's own heads. ``layer`` may also name an earlier
    class-attention layer (its class row, read the same way) or a
    self-attention layer, which has no class-token row (the class token
    joins later): its map is then the mean over its patch query rows of the
    relevance at the talking-heads attention :math:`A = P_w(\mathrm{softmax}
    (\cdot))`, the one that multiplies :math:`V`, as :class:`~captum_vit.attr.RawAttention`
    reads such a layer (``docs/token_graph.rst``, "CaiT: two phases").

    Args:
        model (torch.nn.Module): a stock timm, Hugging Face or torchvision
            Vision Transformer, a timm CaiT, or an adapter wrapping one.
        rules (str, optional): ``"original"`` or ``"chefer2021"``.
            Default: ``"original"``
        layer (int, optional): the layer read; the paper's baseline reads
            the last one. Default: -1
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> attr = cv.PartialLRP(model).attribute(torch.randn(2, 3, 224, 224))
        >>> attr.shape
        torch.Size([2, 3, 224, 224])
    """

    _class_attention = True

    def __init__(
        self,
        model: nn.Module,
        rules: Union[str, RuleSet] = "original",
        layer: int = -1,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, interpolate_mode)
        if isinstance(rules, str) and rules not in ("chefer2021", "original"):
            raise ValueError(f"rules must be 'original' or 'chefer2021', got {rules!r}")
        self.rules = get_rule_set(rules)
        self.layer = self._layer_index(layer)

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        rel = relevance_pass(
            self.adapter,
            self.rules,
            inputs,
            target,
            args=args,
            wrt_input=False,
            layers=[self.layer],
            reduce=_positive_head_mean,
        ).attention[self.layer]
        if not self.adapter.class_attention:
            return self._patch_row(rel, self._pooling_tracer(inputs, args))
        # CaiT: the layer's row of the token graph (the class token's in a
        # class-attention layer, the mean over the patch rows in a
        # self-attention layer), as RawAttention reads a layer
        graph = self._graph(inputs)
        lw = graph.layers[self.layer]
        row = pool_row(graph, lw.stage, rel.shape[0], rel.dtype, rel.device)
        row = through_layer(row, blocks(rel, lw), lw, passthrough=False)
        return patch_scores(graph, to_stage(graph, row, lw.stage))


def _positive_head_mean(rel: Tensor, grad: Optional[Tensor]) -> Tensor:
    return rel.clamp(min=0).mean(dim=1)
