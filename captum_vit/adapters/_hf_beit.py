"""Adapter for Hugging Face ``transformers``' ``BeitForImageClassification``.

The same model as timm's ``Beit`` (see :mod:`._timm_beit`): relative position
bias per layer (``use_relative_position_bias``) and/or shared by all layers
(``use_shared_relative_position_bias``), optional absolute position embedding,
layer scale (``layer_scale_init_value``), and the head on the mean of the
patch tokens followed by the pooler's LayerNorm (``use_mean_pooling``, the
default) or on the class token after the final LayerNorm.

The explicit forward reproduces ``BeitLayer.forward`` (which adds its own bias
to the ``attention_mask`` it passes on, the shared one arriving from
``BeitModel``) and ``BeitAttention.forward`` with any attention
implementation (``eager``, ``sdpa``): the bias reaches
:meth:`Tracer.attention` as its additive ``mask``. Images of any size
divisible by the patch size are accepted, as the model interpolates its
position embedding and bias tables itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple, cast

from torch import Tensor, nn

from ._base import BlockParts, HeadParts, Tracer, UnsupportedModelError, ViTAdapter
from ._hf import HFViTAdapter
from ._parts import (
    Step,
    chain,
    check_divisible,
    check_positions,
    hf_embeddings_forward,
    is_transformers,
    pair,
    routed_block,
    scale_views,
)

if TYPE_CHECKING:
    from transformers.models.beit.modeling_beit import (
        BeitForImageClassification,
        BeitLayer,
        BeitModel,
        BeitPooler,
    )


class HFBeitAdapter(HFViTAdapter):
    """Adapter for ``transformers`` ``BeitForImageClassification``.

    The relative position bias (per layer and/or shared) reaches
    :meth:`Tracer.attention` as its additive ``mask``; the pooling row is
    uniform over the patch tokens (``use_mean_pooling``, followed by the
    pooler's LayerNorm) or the class token. Any image size divisible by the
    patch size is accepted, as the model interpolates its tables.

    Args:
        model (torch.nn.Module): a ``BeitForImageClassification`` of
            ``transformers>=5`` (sdpa or eager attention).
    """

    family = "transformers BeitForImageClassification (relative position bias)"

    model: BeitForImageClassification
    _encoder: BeitModel

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return is_transformers(model, ("BeitForImageClassification",))

    def __init__(self, model: nn.Module) -> None:
        ViTAdapter.__init__(self, model)
        self._encoder = self.model.beit
        self._heads = [self.model.classifier]
        self._prefix = 1
        self._config = self.model.config
        if self._encoder.pooler is None or not all(
            hasattr(layer.attention, "q_proj") for layer in self._layers()
        ):
            raise UnsupportedModelError(
                "this BEiT is laid out differently; captum_vit supports "
                "transformers>=5 BeitForImageClassification (layers[i].attention."
                "q_proj, a pooler)"
            )
        self._ls = scale_views(self._layers(), ("lambda_1", "lambda_2"))

    def _pooler(self) -> BeitPooler:
        pooler = self._encoder.pooler
        assert pooler is not None  # checked when the adapter is made
        return pooler

    # ------------------------------------------------------------ description
    @property
    def pooling(self) -> str:
        return "avg" if self._pooler().layernorm is not None else "token"

    def block_parts(self, layer: int) -> BlockParts:
        parts = super().block_parts(layer)
        parts.scales = [s for s in self._ls[layer] if s is not None]
        return parts

    def head_parts(self) -> HeadParts:
        norm = self._encoder.layernorm
        return HeadParts(
            None if isinstance(norm, nn.Identity) else norm,
            self._heads,
            fc_norm=self._pooler().layernorm,
        )

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        check_divisible(image_size, self.patch_size)

    # ----------------------------------------------------------------- tracing
    def _branches(self, layer: int, block: nn.Module) -> Tuple[Step, Step]:
        # dropout, layer scale (where the layer has one), drop path
        blk = cast("BeitLayer", block)
        scale1, scale2 = self._ls[layer]
        return (
            chain(blk.dropout, scale1, blk.drop_path),
            chain(blk.dropout, scale2, blk.drop_path),
        )

    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        blk = cast("BeitLayer", block)  # checked when the adapter is made
        norms = (blk.layernorm_before, blk.layernorm_after)
        branches = self._branches(layer, blk)

        def forward(
            hidden_states: Tensor,
            attention_mask: Optional[Tensor] = None,
            interpolate_pos_encoding: bool = False,
            resolution: Optional[Tuple[int, int]] = None,
            **kwargs: Any,
        ) -> Tensor:
            def attend(h: Tensor) -> Tensor:
                # the bias for the tokens the tracer passed on (TIS samples)
                N, mask = h.shape[1], attention_mask
                if blk.relative_position_bias is not None:
                    if resolution is None:  # BeitModel always passes it
                        raise TypeError("BeitLayer needs the input resolution")
                    (height, width), (ph, pw) = resolution, pair(blk.patch_size)
                    window = (height // ph, width // pw)
                    bias = blk.relative_position_bias(
                        window, interpolate_pos_encoding, dim_size=N
                    )
                    mask = bias if mask is None else bias + mask
                if mask is not None:
                    check_positions(mask.shape[-1], N, "relative position bias")
                return blk.attention(h, attention_mask=mask, **kwargs)[0]

            return routed_block(
                layer, tracer, hidden_states, attend, blk.mlp, norms, branches
            )

        return forward

    def _end_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        emb = self._encoder.embeddings
        pooler = self._pooler()
        adapter = self

        def pooler_forward(hidden_states: Tensor) -> Tensor:
            # BeitPooler.forward: mean of the patch tokens + LayerNorm, or the
            # class token, with the pooling routed
            N = hidden_states.shape[1]
            w = adapter.pool_weights(N, hidden_states.device, hidden_states.dtype)
            pooled = tracer.pool(hidden_states, w)
            return pooled if pooler.layernorm is None else pooler.layernorm(pooled)

        return [
            (emb, "forward", hf_embeddings_forward(emb, tracer)),
            (pooler, "forward", pooler_forward),
        ]
