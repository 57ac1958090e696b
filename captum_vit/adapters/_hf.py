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

from typing import Any, List, Optional, Tuple

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

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (
            type(model).__module__.startswith("transformers.")
            and type(model).__name__ in _CLASSIFIERS
        )

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        attr, self._prefix, heads = _CLASSIFIERS[type(model).__name__]
        self._encoder = getattr(model, attr)
        self._heads = [getattr(model, h) for h in heads]
        layers = getattr(self._encoder, "layers", None)
        if layers is None or not all(
            hasattr(layer, "attention") and hasattr(layer.attention, "q_proj")
            for layer in layers
        ):
            raise UnsupportedModelError(
                "this transformers version lays out ViT layers differently; "
                "captum_vit supports transformers>=5 (layers[i].attention.q_proj)."
            )
        self._config = model.config

    # ------------------------------------------------------------ description
    @property
    def num_prefix_tokens(self) -> int:
        return self._prefix

    @property
    def has_class_token(self) -> bool:
        return True

    @property
    def pooling(self) -> str:
        return "token"

    @property
    def patch_size(self) -> Tuple[int, int]:
        p = self._config.patch_size
        return (p, p) if isinstance(p, int) else tuple(p)

    @property
    def num_classes(self) -> int:
        return int(self._config.num_labels)

    @property
    def num_heads(self) -> int:
        return int(self._config.num_attention_heads)

    def blocks(self) -> List[nn.Module]:
        return list(self._encoder.layers)

    def block_parts(self, layer: int) -> BlockParts:
        blk = self._encoder.layers[layer]
        at = blk.attention
        return BlockParts(
            blk,
            at,
            blk.layernorm_before,
            blk.layernorm_after,
            [at.q_proj, at.k_proj, at.v_proj],
            at.o_proj,
            [blk.mlp.fc1, blk.mlp.activation_fn, blk.mlp.fc2],
        )

    def embedding_parts(self) -> EmbeddingParts:
        return EmbeddingParts(self._encoder.embeddings.patch_embeddings.projection)

    def head_parts(self) -> HeadParts:
        norm = getattr(self._encoder, "layernorm", None)
        return HeadParts(norm, self._heads)

    def pool_weights(
        self,
        num_tokens: int,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> Tensor:
        w = torch.zeros(num_tokens, device=device, dtype=dtype)
        w[: len(self._heads)] = 1.0 / len(self._heads)  # the heads are averaged
        return w

    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        ph, pw = self.patch_size
        return image_size[0] // ph, image_size[1] // pw

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        s = self._config.image_size
        s = (s, s) if isinstance(s, int) else tuple(s)
        if tuple(image_size) != s:
            raise ValueError(
                f"this transformers model takes {s[0]}x{s[1]} images, got "
                f"{image_size[0]}x{image_size[1]}"
            )

    def _call_model(self, inputs: Tensor, *args, **kwargs):
        out = self.model(inputs, *args, **kwargs)
        return out.logits if hasattr(out, "logits") else out[0]

    # ----------------------------------------------------------------- tracing
    def _block_forward(self, layer: int, blk: nn.Module, tracer: Tracer):
        def forward(hidden_states: Tensor, attention_mask=None, **kwargs):
            x = tracer.block_input(layer, hidden_states)
            h = tracer.attention_input(layer, blk.layernorm_before(x))
            h, _ = blk.attention(h, attention_mask, **kwargs)
            x = tracer.residual(layer, 0, x, blk.dropout(h))
            h = blk.mlp(blk.layernorm_after(x))
            x = tracer.residual(layer, 1, x, blk.dropout(h))
            return tracer.block_output(layer, x)

        return forward

    def _attention_forward(self, layer: int, at: nn.Module, tracer: Tracer):
        def dropout(a: Tensor) -> Tensor:
            return nn.functional.dropout(
                a, p=at.attention_dropout, training=at.training
            )

        def forward(
            hidden_states: Tensor, attention_mask: Optional[Tensor] = None, **kwargs
        ):
            shape = (*hidden_states.shape[:-1], -1, at.head_dim)
            q = at.q_proj(hidden_states).view(shape).transpose(1, 2)
            k = at.k_proj(hidden_states).view(shape).transpose(1, 2)
            v = at.v_proj(hidden_states).view(shape).transpose(1, 2)
            o = tracer.attention(
                layer,
                q,
                k,
                v,
                at.scaling,
                mask=attention_mask,
                dropout=dropout if at.training and at.attention_dropout > 0 else None,
            )
            o = o.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)
            return at.o_proj(o), None

        return forward

    def _end_forwards(self, tracer: Tracer):
        emb = self._encoder.embeddings
        model, encoder, prefix = self.model, self._encoder, self._prefix
        heads = self._heads

        def embeddings_forward(
            pixel_values: Tensor, bool_masked_pos=None, interpolate_pos_encoding=False
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
                size = (size, size) if isinstance(size, int) else tuple(size)
                if (height, width) != size:
                    raise ValueError(
                        f"Input image size ({height}*{width}) doesn't match model "
                        f"({size[0]}*{size[1]})."
                    )
            x = emb.patch_embeddings(pixel_values)
            B = x.shape[0]
            to_cat = [emb.cls_token.expand(B, -1, -1)]
            if prefix == 2:
                to_cat.append(emb.distillation_token.expand(B, -1, -1))
            x = torch.cat(to_cat + [x], dim=1)
            x = tracer.embed_add(x, emb.position_embeddings)
            return emb.dropout(x)

        def model_forward(
            pixel_values: Optional[Tensor] = None,
            labels: Optional[Tensor] = None,
            **kwargs: Any,
        ) -> Any:
            # the classifier's forward (logits only), with the pooling of each
            # head's token routed; several heads are averaged (WithTeacher)
            if labels is not None:
                raise NotImplementedError("labels are not supported while tracing")
            from transformers.modeling_outputs import ImageClassifierOutput

            seq = encoder(pixel_values, **kwargs).last_hidden_state
            outs = []
            for i, head in enumerate(heads):
                w = torch.zeros(seq.shape[1], device=seq.device, dtype=seq.dtype)
                w[i] = 1.0
                outs.append(head(tracer.pool(seq, w)))
            logits = outs[0] if len(outs) == 1 else tracer.merge_heads(outs)
            return ImageClassifierOutput(logits=logits)

        return [(emb, "forward", embeddings_forward), (model, "forward", model_forward)]
