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

from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple, Union, cast

import torch
from torch import Tensor, nn

from ._base import BlockParts, HeadParts, Tracer, UnsupportedModelError, ViTAdapter
from ._hf import HFViTAdapter
from ._parts import (
    check_divisible,
    gate_gaps,
    gated_mlp_forwards,
    hf_classifier_forward,
    hf_embeddings_forward,
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

    Dinov2Layers = List[Union[Dinov2Layer, dinov2_reg.Dinov2WithRegistersLayer]]

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

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (
            type(model).__module__.startswith("transformers.")
            and type(model).__name__ in _CLASSIFIERS
        )

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
        for b in self._dinov2_layers():
            mlp_parts(b.mlp)  # refuses an unknown MLP layout

    def _dinov2_layers(self) -> Dinov2Layers:
        """The encoder's layers, typed (``nn.ModuleList`` types its items as
        ``Module``; their layout is checked when the adapter is made)."""
        return cast("Dinov2Layers", list(self._encoder.encoder.layer))

    # ------------------------------------------------------------ description
    @property
    def pooling(self) -> str:
        return "token+avg"

    def patch_weights(
        self,
        num_tokens: int,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> Tensor:
        """Uniform weights over the patch tokens (zero on class and register
        tokens): the mean the head reads."""
        w = torch.zeros(num_tokens, device=device, dtype=dtype)
        w[self._prefix :] = 1.0 / (num_tokens - self._prefix)
        return w

    def pool_weights(
        self,
        num_tokens: int,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> Tensor:
        w = self.patch_weights(num_tokens, device, dtype) / 2
        w[0] = 0.5
        return w

    def _pool_tokens(self, tokens: Tensor, tracer: Tracer) -> List[Tensor]:
        # the two halves of the head: class token and patch mean, concatenated
        N = tokens.shape[1]
        cls = torch.zeros(N, device=tokens.device, dtype=tokens.dtype)
        cls[0] = 1.0
        mean = self.patch_weights(N, tokens.device, tokens.dtype)
        return [torch.cat([tracer.pool(tokens, cls), tracer.pool(tokens, mean)], 1)]

    def _split_pooled(self, pooled: Tensor) -> List[Tensor]:
        return [torch.cat([pooled, pooled], dim=1)]

    def blocks(self) -> List[nn.Module]:
        return list(self._dinov2_layers())

    def block_parts(self, layer: int) -> BlockParts:
        blk = self._dinov2_layers()[layer]
        at = blk.attention
        return BlockParts(
            blk,
            at,
            blk.norm1,
            blk.norm2,
            [at.q_proj, at.k_proj, at.v_proj],
            at.o_proj,
            mlp_parts(blk.mlp)[0],
            scales=[blk.layer_scale1, blk.layer_scale2],
        )

    def head_parts(self) -> HeadParts:
        return HeadParts(self._encoder.layernorm, self._heads)

    def relevance_gaps(self) -> List[str]:
        return gate_gaps(self._dinov2_layers())

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        check_divisible(image_size, self.patch_size)

    # ----------------------------------------------------------------- tracing
    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        # checked when the adapter is made
        blk = cast("Union[Dinov2Layer, dinov2_reg.Dinov2WithRegistersLayer]", block)

        def forward(
            hidden_states: Tensor,
            attention_mask: Optional[Tensor] = None,
            **kwargs: Any,
        ) -> Tensor:
            x = tracer.block_input(layer, hidden_states)
            h = tracer.attention_input(layer, blk.norm1(x))
            h, _ = blk.attention(h, attention_mask=attention_mask, **kwargs)
            x = tracer.residual(layer, 0, x, blk.drop_path(blk.layer_scale1(h)))
            h = blk.layer_scale2(blk.mlp(blk.norm2(x)))
            x = tracer.residual(layer, 1, x, blk.drop_path(h))
            return tracer.block_output(layer, x)

        return forward

    def _mlp_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        return gated_mlp_forwards(self._dinov2_layers(), tracer)

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
