"""Adapter for Hugging Face ``transformers`` ViT and DeiT image classifiers.

Supports ``ViTForImageClassification``, ``DeiTForImageClassification`` (class
+ distillation token, the class token's head) and
``DeiTForImageClassificationWithTeacher`` (what distilled DeiT checkpoints load
as: the mean of the class-token and distillation-token heads) of
transformers 5, with any attention implementation (``eager``, ``sdpa``): the
explicit forward computes the same function as ``ViTLayer.forward`` /
``ViTAttention.forward``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple, Union, cast

import torch
from torch import Tensor, nn

from ._base import (
    BlockParts,
    EmbeddingParts,
    HeadParts,
    Tracer,
    UnsupportedModelError,
    ViTAdapter,
)
from ._parts import (
    Step,
    block_parts,
    check_fixed_size,
    hf_attention_forward,
    hf_classifier_forward,
    hf_projections,
    is_transformers,
    pair,
    routed_block,
)

if TYPE_CHECKING:
    from transformers.models.beit.modeling_beit import (
        BeitAttention,
        BeitForImageClassification,
        BeitLayer,
        BeitModel,
    )
    from transformers.models.deit.modeling_deit import (
        DeiTAttention,
        DeiTEmbeddings,
        DeiTForImageClassification,
        DeiTForImageClassificationWithTeacher,
        DeiTLayer,
        DeiTModel,
    )
    from transformers.models.dinov2.modeling_dinov2 import (
        Dinov2Attention,
        Dinov2ForImageClassification,
        Dinov2Layer,
        Dinov2Model,
    )
    from transformers.models.dinov2_with_registers import (
        modeling_dinov2_with_registers as dinov2_reg,
    )
    from transformers.models.vit.modeling_vit import (
        ViTAttention,
        ViTForImageClassification,
        ViTLayer,
        ViTModel,
    )

    #: the classifiers of :class:`HFViTAdapter` and its subclasses
    HFClassifier = Union[
        ViTForImageClassification,
        DeiTForImageClassification,
        DeiTForImageClassificationWithTeacher,
        BeitForImageClassification,
        Dinov2ForImageClassification,
        dinov2_reg.Dinov2WithRegistersForImageClassification,
    ]
    #: their encoders: ``layers[i]`` are ``*Layer`` (ViT, DeiT, BEiT) ...
    ViTLayout = Union[ViTModel, DeiTModel, BeitModel]
    #: ... or ``encoder.layer[i]`` (DINOv2, :class:`HFDinov2Adapter`)
    HFEncoder = Union[ViTLayout, Dinov2Model, dinov2_reg.Dinov2WithRegistersModel]
    #: the layers of them all
    HFLayer = Union[
        ViTLayer,
        DeiTLayer,
        BeitLayer,
        Dinov2Layer,
        dinov2_reg.Dinov2WithRegistersLayer,
    ]
    #: the self-attention of them all
    HFAttention = Union[
        ViTAttention,
        DeiTAttention,
        BeitAttention,
        Dinov2Attention,
        dinov2_reg.Dinov2WithRegistersAttention,
    ]

# class name -> (encoder attribute, prefix tokens, classifier attributes; one
# per pooled token: several are averaged, as the model does)
_CLASSIFIERS = {
    "ViTForImageClassification": ("vit", 1, ("classifier",)),
    "DeiTForImageClassification": ("deit", 2, ("classifier",)),
    "DeiTForImageClassificationWithTeacher": (
        "deit",
        2,
        ("cls_classifier", "distillation_classifier"),
    ),
}


class HFViTAdapter(ViTAdapter):
    """Adapter for ``transformers`` ``ViTForImageClassification``,
    ``DeiTForImageClassification`` and ``DeiTForImageClassificationWithTeacher``."""

    family = (
        "transformers ViTForImageClassification / DeiTForImageClassification"
        " / DeiTForImageClassificationWithTeacher"
    )

    # what the BEiT and DINOv2 subclasses share with it
    model: HFClassifier
    _encoder: HFEncoder
    has_class_token = True
    #: the attribute names of a layer's two norms
    _norms: Tuple[str, str] = ("layernorm_before", "layernorm_after")

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return is_transformers(model, _CLASSIFIERS)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        attr, self._prefix, heads = _CLASSIFIERS[type(model).__name__]
        self._encoder = getattr(model, attr)
        self._heads: List[nn.Module] = [getattr(model, h) for h in heads]
        layers = getattr(self._encoder, "layers", None)
        if layers is None or not all(
            hasattr(layer, "attention") and hasattr(layer.attention, "q_proj")
            for layer in layers
        ):
            raise UnsupportedModelError(
                "this transformers version lays out ViT layers differently; "
                "captum_vit supports transformers>=5 (layers[i].attention.q_proj)."
            )
        self._config = self.model.config

    # ------------------------------------------------------------ description
    @property
    def num_prefix_tokens(self) -> int:
        return self._prefix

    @property
    def pooling(self) -> str:
        return "token"

    @property
    def patch_size(self) -> Tuple[int, int]:
        return pair(self._config.patch_size)

    @property
    def num_classes(self) -> int:
        n = self._config.num_labels
        if n is None:
            raise TypeError("the model's config has no labels (id2label is None)")
        return n

    @property
    def num_heads(self) -> int:
        return int(self._config.num_attention_heads)

    def _layers(self) -> List[HFLayer]:
        """The encoder's layers, typed (``nn.ModuleList`` types its items as
        ``Module``). :class:`HFDinov2Adapter` keeps its layers elsewhere."""
        layers = cast("ViTLayout", self._encoder).layers
        return cast("List[HFLayer]", list(layers))

    def blocks(self) -> List[nn.Module]:
        return list(self._layers())

    def block_parts(self, layer: int) -> BlockParts:
        at = self._layers()[layer].attention
        qkv = hf_projections(at)
        return block_parts(self._layers()[layer], at, qkv, at.o_proj, self._norms)

    def embedding_parts(self) -> EmbeddingParts:
        return EmbeddingParts(self._encoder.embeddings.patch_embeddings.projection)

    def head_parts(self) -> HeadParts:
        norm = getattr(self._encoder, "layernorm", None)
        return HeadParts(norm, self._heads)

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        size = pair(self._config.image_size)
        check_fixed_size(image_size, size, "transformers model")

    def _call_model(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out = self.model(inputs, *args, **kwargs)
        logits: Tensor = out.logits if hasattr(out, "logits") else out[0]
        return logits

    # ----------------------------------------------------------------- tracing
    def _branches(self, layer: int, block: nn.Module) -> Tuple[Step, Step]:
        """What layer ``layer`` applies to its attention and MLP branches
        before the residual sums (:func:`routed_block`): ViT and DeiT their
        dropout."""
        blk = cast("Union[ViTLayer, DeiTLayer]", block)
        return blk.dropout, blk.dropout

    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        blk = cast("HFLayer", block)  # checked when the adapter is made
        norm1, norm2 = (getattr(blk, n) for n in self._norms)
        branches = self._branches(layer, blk)

        def forward(
            hidden_states: Tensor,
            attention_mask: Optional[Tensor] = None,
            **kwargs: Any,
        ) -> Tensor:
            def attend(h: Tensor) -> Tensor:
                return blk.attention(h, attention_mask=attention_mask, **kwargs)[0]

            x, norms = hidden_states, (norm1, norm2)
            return routed_block(layer, tracer, x, attend, blk.mlp, norms, branches)

        return forward

    def _attention_forward(
        self, layer: int, module: nn.Module, tracer: Tracer
    ) -> Callable[..., Tuple[Tensor, None]]:
        at = cast("HFAttention", module)  # checked when the adapter is made
        return hf_attention_forward(
            at,
            layer,
            tracer,
            (at.q_proj, at.k_proj, at.v_proj, at.o_proj),
            at.head_dim,
            at.scaling,
            at.attention_dropout,
        )

    def _end_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        # ViT and DeiT; the subclasses have their own
        encoder = cast("Union[ViTModel, DeiTModel]", self._encoder)
        emb, model, prefix = encoder.embeddings, self.model, self._prefix
        heads, adapter = self._heads, self

        def embeddings_forward(
            pixel_values: Tensor,
            bool_masked_pos: Optional[Tensor] = None,
            interpolate_pos_encoding: bool = False,
        ) -> Tensor:
            # ViTEmbeddings / DeiTEmbeddings.forward, with the sum routed
            if bool_masked_pos is not None or interpolate_pos_encoding:
                raise NotImplementedError(
                    "bool_masked_pos / interpolate_pos_encoding are not supported "
                    "by this explanation method"
                )
            _, _, height, width = pixel_values.shape
            size = emb.image_size if hasattr(emb, "image_size") else None
            if size is not None:
                h, w = pair(size)
                if (height, width) != (h, w):
                    raise ValueError(
                        f"Input image size ({height}*{width}) doesn't match model "
                        f"({h}*{w})."
                    )
            x = emb.patch_embeddings(pixel_values)
            B = x.shape[0]
            to_cat = [emb.cls_token.expand(B, -1, -1)]
            if prefix == 2:  # DeiT's distillation token
                dist = cast("DeiTEmbeddings", emb).distillation_token
                to_cat.append(dist.expand(B, -1, -1))
            x = torch.cat(to_cat + [x], dim=1)
            x = tracer.embed_add(x, emb.position_embeddings)
            return emb.dropout(x)

        def logits(seq: Tensor) -> Tensor:
            # the pooling of each head's token routed; several heads are
            # averaged (WithTeacher)
            rows = adapter._pool_rows(seq.new_zeros(seq.shape[1]))
            outs = [head(tracer.pool(seq, w)) for head, w in zip(heads, rows)]
            return outs[0] if len(outs) == 1 else tracer.merge_heads(outs)

        model_forward = hf_classifier_forward(encoder, logits)
        return [(emb, "forward", embeddings_forward), (model, "forward", model_forward)]
