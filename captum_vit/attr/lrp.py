"""Full LRP to pixels on Vision Transformers (Chefer et al. 2021's rules and
baseline)."""

from __future__ import annotations

from typing import Union

from torch import nn

from ._lrp import RuleSet, _PixelLRPAttribution, get_rule_set
from ._registry import register_method


@register_method("lrp")
class LRP(_PixelLRPAttribution):
    r"""Layer-wise Relevance Propagation from the target logit to the input
    pixels of a stock Vision Transformer, with the rules of Chefer, Gur and
    Wolf (CVPR 2021, https://arxiv.org/abs/2012.09838).

    Relevance starts at one on the target logit,
    :math:`R^{(\text{logits})} = e_t`, and is propagated backwards with:

    * ``rules="chefer2021"`` (their ``layers_ours``, the rules behind
      :class:`TransformerLRP`): LRP-:math:`\alpha_1\beta_0` for linear layers
      (biases ignored),

      .. math::
          R_x = x^+ \odot \left(\operatorname{sdiv}(R, Z) W^+\right)
              + x^- \odot \left(\operatorname{sdiv}(R, Z) W^-\right), \quad
          Z = x^+ W^{+\top} + x^- W^{-\top},

      identity through LayerNorm, GELU and softmax, the renormalised
      residual and positional-embedding Add, the Clone rule at each residual
      fork, the halved z-rule in both attention matmuls, the z-rule for the
      class-token pooling and the :math:`z^\mathcal{B}` rule (per-image
      bounds) for the patch convolution. Reproduces the reference key
      ``full_lrp``.
    * ``rules="original"`` (their ``layers_lrp``, the **"LRP" baseline** of
      the paper's tables): the two :math:`\alpha` terms of the linear rule
      are normalised separately (this rule does not conserve relevance) and
      the Add is the plain z-rule. Reproduces ``full_lrp_orig``.

    The relevance that the positional-embedding Add gives to the embedding
    and the class-token row is discarded, as in the reference. The output is
    the relevance of every input element ``(B, C, H, W)`` (signed, not
    normalised); the reference's ``(H, W)`` map is its sum over channels.
    ``output="tokens"`` returns the relevance summed over channels and over
    each patch, ``(B, gh, gw)``.

    Args:
        model (torch.nn.Module): a stock timm, Hugging Face or torchvision
            Vision Transformer, or an adapter wrapping one.
        rules (str, optional): ``"chefer2021"`` or ``"original"``.
            Default: ``"chefer2021"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> images = torch.randn(2, 3, 224, 224)
        >>> rel = cv.LRP(model).attribute(images, target=3)
        >>> rel.shape
        torch.Size([2, 3, 224, 224])
        >>> baseline = cv.LRP(model, rules="original").attribute(images, target=3)
    """

    def __init__(self, model: nn.Module, rules: Union[str, RuleSet] = "chefer2021"):
        super().__init__(model)
        if isinstance(rules, str) and rules not in ("chefer2021", "original"):
            raise ValueError(
                f"rules must be 'chefer2021' or 'original', got {rules!r} "
                "(AttnLRP is the class cv.AttnLRP)"
            )
        self.rules = get_rule_set(rules)
