"""Adapter for Hugging Face ``transformers``' DINOv2 image classifiers.

``Dinov2ForImageClassification`` and
``Dinov2WithRegistersForImageClassification`` (Oquab et al., 2023,
https://arxiv.org/abs/2304.07193; registers: Darcet et al., ICLR 2024,
https://arxiv.org/abs/2309.16588) are pre-norm ViTs with a class token,
layer scale, a GELU or SwiGLU MLP (``use_swiglu_ffn``) and, for the second,
register tokens placed after the class token (they get no position
embedding). The **head** reads two pooled vectors and concatenates them,

.. math::
    y = W \\begin{bmatrix} z_{\\text{cls}} \\\\
        \\tfrac{1}{P}\\sum_{p=1}^{P} z_p \\end{bmatrix} + b,

the class token and the mean of the ``P`` *patch* tokens (registers are not
in the mean in transformers >= 5; including them was transformers#37817).
The adapter's :attr:`pooling` is ``"token+avg"`` and its pooling row
(:meth:`pool_weights`, the row that methods read out of token-to-token
maps) gives the two halves of the head equal weight: 1/2 on the class
token, :math:`1/(2P)` on each patch token, 0 on the registers. With tracing
of the ends (the LRP engine) the two poolings are routed through
:meth:`Tracer.pool` separately and concatenated, as the model does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, Tuple, Union, cast

import torch
from torch import Tensor, nn

from ._base import BlockParts, HeadParts, Tracer, UnsupportedModelError, ViTAdapter
from ._hf import HFViTAdapter
from ._parts import (
    Step,
    chain,
    check_divisible,
    gate_gaps,
    gated_mlp_forwards,
    hf_classifier_forward,
    hf_embeddings_forward,
    is_transformers,
    mlp_parts,
)

if TYPE_CHECKING:
    from transformers.models.dinov2.modeling_dinov2 import (
        Dinov2ForImageClassification,
        Dinov2Layer,
        Dinov2Model,
    )
    from transformers.models.dinov2_with_registers import (
        modeling_dinov2_with_registers as dinov2_reg,
    )

    from ._hf import HFLayer

# class name -> encoder attribute
_CLASSIFIERS = {
    "Dinov2ForImageClassification": "dinov2",
    "Dinov2WithRegistersForImageClassification": "dinov2_with_registers",
}


class HFDinov2Adapter(HFViTAdapter):
    r"""Adapter for ``transformers`` ``Dinov2ForImageClassification`` and
    ``Dinov2WithRegistersForImageClassification``.

    The head reads the class token and the mean of the :math:`P` patch
    tokens, concatenated (registers are in neither): :attr:`pooling` is
    ``"token+avg"`` and the pooling row gives both halves equal weight,

    .. math::
        w_{\text{cls}} = \tfrac12, \qquad w_{\text{reg}} = 0, \qquad
        w_p = \tfrac{1}{2P}.

    Args:
        model (torch.nn.Module): a ``Dinov2ForImageClassification`` or
            ``Dinov2WithRegistersForImageClassification`` of
            ``transformers>=5`` with a linear classifier (sdpa or eager
            attention).
    """

    family = (
        "transformers Dinov2ForImageClassification / "
        "Dinov2WithRegistersForImageClassification (class token + patch mean head)"
    )

    model: Union[
        Dinov2ForImageClassification,
        dinov2_reg.Dinov2WithRegistersForImageClassification,
    ]
    _encoder: Union[Dinov2Model, dinov2_reg.Dinov2WithRegistersModel]
    _norms = ("norm1", "norm2")

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return is_transformers(model, _CLASSIFIERS)

    def __init__(self, model: nn.Module) -> None:
        ViTAdapter.__init__(self, model)
        self._encoder = getattr(model, _CLASSIFIERS[type(model).__name__])
        self._heads = [self.model.classifier]
        self._config = self.model.config
        self._registers = int(getattr(self._config, "num_register_tokens", 0) or 0)
        self._prefix = 1 + self._registers
        layers = getattr(getattr(self._encoder, "encoder", None), "layer", None)
        if layers is None or not all(hasattr(b.attention, "q_proj") for b in layers):
            raise UnsupportedModelError(
                "this DINOv2 is laid out differently; captum_vit supports "
                "transformers>=5 (encoder.layer[i].attention.q_proj)"
            )
        if not isinstance(self.model.classifier, nn.Linear):
            raise UnsupportedModelError(
                "this DINOv2 has no linear classifier (num_labels=0)"
            )
        for b in self._layers():
            mlp_parts(b.mlp)  # refuses an unknown MLP layout

    def _layers(self) -> List[HFLayer]:
        """The encoder's layers, typed (``nn.ModuleList`` types its items as
        ``Module``; their layout is checked when the adapter is made)."""
        return cast("List[HFLayer]", list(self._encoder.encoder.layer))

    # ------------------------------------------------------------ description
    @property
    def pooling(self) -> str:
        return "token+avg"

    def _pool_tokens(self, tokens: Tensor, tracer: Tracer) -> List[Tensor]:
        # the two halves of the head: class token and patch mean, concatenated
        rows = self._pool_rows(tokens.new_zeros(tokens.shape[1]))
        return [torch.cat([tracer.pool(tokens, w) for w in rows], 1)]

    def _split_pooled(self, pooled: Tensor) -> List[Tensor]:
        return [torch.cat([pooled, pooled], dim=1)]

    def block_parts(self, layer: int) -> BlockParts:
        parts = super().block_parts(layer)
        blk = cast("Dinov2Layer", self._layers()[layer])
        parts.scales = [blk.layer_scale1, blk.layer_scale2]
        return parts

    def head_parts(self) -> HeadParts:
        return HeadParts(self._encoder.layernorm, self._heads)

    def relevance_gaps(self) -> List[str]:
        return gate_gaps(self._layers())

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        check_divisible(image_size, self.patch_size)

    # ----------------------------------------------------------------- tracing
    def _branches(self, layer: int, block: nn.Module) -> Tuple[Step, Step]:
        # layer scale, then drop path
        blk = cast("Union[Dinov2Layer, dinov2_reg.Dinov2WithRegistersLayer]", block)
        return (
            chain(blk.layer_scale1, blk.drop_path),
            chain(blk.layer_scale2, blk.drop_path),
        )

    def _mlp_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        return gated_mlp_forwards(self._layers(), tracer)

    def _end_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        emb, model = self._encoder.embeddings, self.model

        def logits(seq: Tensor) -> Tensor:
            # class token and patch mean, each pooled through the tracer
            return model.classifier(self._pool_tokens(seq, tracer)[0])

        model_forward = hf_classifier_forward(self._encoder, logits)
        embeddings_forward = hf_embeddings_forward(emb, tracer, self._registers)
        return [(emb, "forward", embeddings_forward), (model, "forward", model_forward)]
