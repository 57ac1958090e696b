r"""Adapter for Hugging Face ``transformers`` (>= 5) CLIP and SigLIP.

* ``CLIPModel``, ``CLIPVisionModelWithProjection``, ``CLIPVisionModel``: a
  class token, ``pre_layrnorm`` after the positional sum, pre-norm
  ``CLIPEncoderLayer``\ s, the class token's ``post_layernorm`` and (except
  for ``CLIPVisionModel``) the ``visual_projection``.
* ``SiglipModel``, ``SiglipVisionModel``: no class token (every token is a
  patch); ``post_layernorm`` on all tokens, then the multi-head
  attention-pooling head (``SiglipMultiheadAttentionPoolingHead``: a learnt
  probe attends over the tokens, ``o + MLP(LN(o))``), no projection. The
  pooling row is the probe's attention (see
  :mod:`captum_vit.adapters._pooling`).
* ``Siglip2Model``, ``Siglip2VisionModel``: SigLIP 2 takes *patchified*
  inputs (``pixel_values`` ``(B, patches, C p p)``, a patch mask and each
  image's grid) through a linear patch embedding, with the position table
  resized to every image's grid: the adapter takes ordinary images
  ``(B, C, H, W)``, cuts them into patches the way the Siglip2 image
  processor does (channels last within a patch) and passes the whole grid.
  LRP does not apply (no rule for a linear patch embedding on patchified
  inputs: :meth:`~ViTAdapter.relevance_gaps`).

:meth:`~ViTAdapter.forward` returns the image embedding (``get_image_features``;
``image_embeds`` / ``pooler_output`` of the vision-only classes). Any attention
implementation (``eager``, ``sdpa``) computes the same function as the
explicit forward.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)

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
from ._mha import InProj, check_mha
from ._parts import (
    block_parts,
    check_fixed_size,
    hf_attention_forward,
    hf_projections,
    is_transformers,
    pair,
    routed_block,
)
from ._pooling import mha_views, read_queries, siglip_head_forward
from ._text import TextTower

if TYPE_CHECKING:
    from transformers.models.clip.configuration_clip import CLIPTextConfig
    from transformers.models.clip.modeling_clip import (
        CLIPAttention,
        CLIPEncoderLayer,
        CLIPModel,
        CLIPVisionEmbeddings,
        CLIPVisionModel,
    )
    from transformers.models.siglip.configuration_siglip import SiglipTextConfig
    from transformers.models.siglip.modeling_siglip import (
        SiglipAttention,
        SiglipEncoderLayer,
        SiglipModel,
        SiglipVisionModel,
    )
    from transformers.models.siglip2.configuration_siglip2 import (
        Siglip2TextConfig,
        Siglip2VisionConfig,
    )
    from transformers.models.siglip2.modeling_siglip2 import (
        Siglip2Attention,
        Siglip2EncoderLayer,
        Siglip2Model,
        Siglip2VisionModel,
    )

    from ._pooling import SiglipHead

    #: the models with a text tower
    CLIPLike = Union[CLIPModel, SiglipModel, Siglip2Model]
    #: the vision model of every class in ``_MODELS``
    VisionModel = Union[CLIPVisionModel, SiglipVisionModel, Siglip2VisionModel]
    EncoderLayer = Union[CLIPEncoderLayer, SiglipEncoderLayer, Siglip2EncoderLayer]
    Attention = Union[CLIPAttention, SiglipAttention, Siglip2Attention]

__all__ = ["HFCLIPAdapter"]

# class name -> (vision attribute or "" for the model itself, projection
# attribute or "", what the forward output holds)
_MODELS: Dict[str, Tuple[str, str, str]] = {
    "CLIPModel": ("vision_model", "visual_projection", "features"),
    "CLIPVisionModelWithProjection": (
        "vision_model",
        "visual_projection",
        "image_embeds",
    ),
    "CLIPVisionModel": ("", "", "pooler_output"),
    "SiglipModel": ("vision_model", "", "features"),
    "SiglipVisionModel": ("", "", "pooler_output"),
    "Siglip2Model": ("vision_model", "", "features"),
    "Siglip2VisionModel": ("", "", "pooler_output"),
}
_SIGLIP = ("SiglipModel", "SiglipVisionModel", "Siglip2Model", "Siglip2VisionModel")


def _tensor(out: Any, field: str) -> Tensor:
    if isinstance(out, Tensor):
        return out
    return getattr(out, field) if hasattr(out, field) else out[0]


class HFText(TextTower):
    """The text tower of a ``CLIPModel`` / ``SiglipModel`` / ``Siglip2Model``."""

    def __init__(self, model: CLIPLike, siglip: bool) -> None:
        self.model = model
        self.siglip = siglip
        # transformers types it as what __init__ accepts (dict, None); the
        # config makes it a config object
        cfg = cast(
            "Union[CLIPTextConfig, SiglipTextConfig, Siglip2TextConfig]",
            model.config.text_config,
        )
        self.vocab_size = int(cfg.vocab_size)
        self.context_length = int(cfg.max_position_embeddings)

    def tokenize(self, texts: Sequence[str], tokenizer: Any) -> Dict[str, Tensor]:
        if hasattr(tokenizer, "model_input_names"):  # a transformers tokenizer
            # SigLIP was trained on prompts padded to the full length, without
            # an attention mask (its model card); CLIP pads to the longest
            kw: Dict[str, Any] = (
                {"padding": "max_length", "max_length": self.context_length}
                if self.siglip
                else {"padding": True}
            )
            enc = tokenizer(list(texts), truncation=True, return_tensors="pt", **kw)
            out = {"input_ids": enc["input_ids"]}
            if not self.siglip and "attention_mask" in enc:
                out["attention_mask"] = enc["attention_mask"]
        else:
            ids = tokenizer(list(texts))
            out = {"input_ids": ids if isinstance(ids, Tensor) else ids["input_ids"]}
        self.check_ids(out["input_ids"], self.vocab_size, self.context_length)
        return out

    def embed(self, tokens: Dict[str, Tensor]) -> Tensor:
        device = self.model.logit_scale.device
        tokens = {k: v.to(device) for k, v in tokens.items()}
        return _tensor(self.model.get_text_features(**tokens), "pooler_output")

    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.detach().exp()

    def logit_bias(self) -> Optional[Tensor]:
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else bias.detach()

    def default_tokenizer(self) -> Callable[..., Any]:
        raise ValueError(
            "pass the model's tokenizer, e.g. tokenizer=transformers.AutoTokenizer."
            "from_pretrained(MODEL_NAME)"
        )


class HFCLIPAdapter(ViTAdapter):
    """Adapter for ``transformers`` CLIP, SigLIP and SigLIP 2 (vision towers
    and full models).

    Args:
        model (torch.nn.Module): ``CLIPModel``, ``CLIPVisionModelWithProjection``,
            ``CLIPVisionModel``, ``SiglipModel``, ``SiglipVisionModel``,
            ``Siglip2Model`` or ``Siglip2VisionModel`` of ``transformers>=5``.
    """

    family = (
        "transformers CLIPModel / CLIPVisionModel(WithProjection) / SiglipModel / "
        "SiglipVisionModel / Siglip2Model / Siglip2VisionModel"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return is_transformers(model, _MODELS)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        name = type(model).__name__
        vision, proj, self._field = _MODELS[name]
        # the classes of _MODELS
        self.vm = cast("VisionModel", getattr(model, vision) if vision else model)
        self._proj: Optional[nn.Linear] = getattr(model, proj) if proj else None
        self.siglip = name in _SIGLIP
        self.siglip2 = name.startswith("Siglip2")
        self._config = self.vm.config
        if not all(hasattr(b.self_attn, "q_proj") for b in self._layers()):
            raise UnsupportedModelError(
                "this transformers version lays out CLIP layers differently; "
                "captum_vit supports transformers>=5"
            )
        self._head: Optional[SiglipHead] = (
            getattr(self.vm, "head", None) if self.siglip else None
        )
        if self.siglip and self._head is None:
            raise UnsupportedModelError(
                f"this {name} has no attention-pooling head (vision_use_head=False): "
                "there is no pooled embedding to explain"
            )
        self._views: List[InProj] = []
        if self._head is not None:
            check_mha(self._head.attention, f"{name} pooling head")
            self._views = mha_views(self._head.attention)
        self.text = None
        if hasattr(model, "text_model"):
            # a model with a text tower (the classes of _MODELS)
            self.text = HFText(cast("CLIPLike", model), self.siglip)

    # ------------------------------------------------------------ description
    @property
    def num_prefix_tokens(self) -> int:
        return 0 if self.siglip else 1

    @property
    def has_class_token(self) -> bool:
        return not self.siglip

    @property
    def pooling(self) -> str:
        return "attention" if self.siglip else "token"

    @property
    def patch_size(self) -> Tuple[int, int]:
        return pair(self._config.patch_size)

    @property
    def num_classes(self) -> int:
        if self._proj is not None:
            return int(self._proj.out_features)
        return int(self._config.hidden_size)

    @property
    def num_heads(self) -> int:
        return int(self._config.num_attention_heads)

    def _layers(self) -> List[EncoderLayer]:
        """The encoder's layers, typed (``nn.ModuleList`` types its items as
        ``Module``)."""
        return cast("List[EncoderLayer]", list(self.vm.encoder.layers))

    def blocks(self) -> List[nn.Module]:
        return list(self._layers())

    def block_parts(self, layer: int) -> BlockParts:
        blk = self._layers()[layer]
        norms = ("layer_norm1", "layer_norm2")
        at = blk.self_attn
        return block_parts(blk, at, hf_projections(at), at.out_proj, norms)

    def embedding_parts(self) -> EmbeddingParts:
        pre = getattr(self.vm, "pre_layrnorm", None)
        return EmbeddingParts(self.vm.embeddings.patch_embedding, post_norm=pre)

    def head_parts(self) -> HeadParts:
        proj = [self._proj] if self._proj is not None else [nn.Identity()]
        if self._head is not None:  # SigLIP
            h = self._head
            pooler: List[nn.Module] = [*self._views, h.attention.out_proj, h.layernorm]
            pooler += [h.mlp.fc1, h.mlp.activation_fn, h.mlp.fc2]
            return HeadParts(self.vm.post_layernorm, proj, pooler=pooler)
        return HeadParts(None, proj, fc_norm=self.vm.post_layernorm)

    def relevance_gaps(self) -> List[str]:
        if self.siglip2:
            return [
                "SigLIP 2's linear patch embedding of patchified inputs (the rules "
                "know the patch convolution)"
            ]
        return []

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        h, w = image_size
        ph, pw = self.patch_size
        if self.siglip2:
            n = cast("Siglip2VisionConfig", self._config).num_patches
            if h % ph or w % pw or (h // ph) * (w // pw) > n:
                raise ValueError(
                    f"SigLIP 2 takes images whose {ph}x{pw} patches tile them, at "
                    f"most {n} patches; got {h}x{w}"
                )
            return
        size = pair(self._config.image_size)
        check_fixed_size(image_size, size, "transformers model")

    def text_tower(self) -> Optional[TextTower]:
        return self.text

    # ---------------------------------------------------------------- running
    def _patchify(self, images: Tensor) -> Dict[str, Tensor]:
        """SigLIP 2's inputs for ``images``: patches ``(B, h w, p p C)``
        (row-major, channels last, as its image processor), the patch mask and
        the grid of each image."""
        B, C, H, W = images.shape
        p = self.patch_size[0]
        h, w = H // p, W // p
        patches = images.reshape(B, C, h, p, w, p).permute(0, 2, 4, 3, 5, 1)
        mask = torch.ones(B, h * w, dtype=torch.long, device=images.device)
        shapes = torch.tensor([[h, w]] * B, device=images.device)
        return {
            "pixel_values": patches.reshape(B, h * w, p * p * C),
            "pixel_attention_mask": mask,
            "spatial_shapes": shapes,
        }

    def _call_model(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        kw = self._patchify(inputs) if self.siglip2 else {"pixel_values": inputs}
        if self._field == "features":
            model = cast("CLIPLike", self.model)  # "features": a model with text
            out = model.get_image_features(*args, **kw, **kwargs)
            return _tensor(out, "pooler_output")
        return _tensor(self.model(*args, **kw, **kwargs), self._field)

    def _pool_tokens(self, tokens: Tensor, tracer: Tracer) -> List[Tensor]:
        if self._head is None:  # CLIP
            return super()._pool_tokens(tokens, tracer)
        return [siglip_head_forward(self._head, self._views, tracer)(tokens)]

    # ----------------------------------------------------------------- tracing
    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        blk = cast("EncoderLayer", block)  # a layer of self._layers()

        def forward(
            hidden_states: Tensor, attention_mask: Optional[Tensor] = None, **kw: Any
        ) -> Tensor:
            def attend(h: Tensor) -> Tensor:
                return blk.self_attn(
                    hidden_states=h, attention_mask=attention_mask, **kw
                )[0]

            norms = (blk.layer_norm1, blk.layer_norm2)
            return routed_block(layer, tracer, hidden_states, attend, blk.mlp, norms)

        return forward

    def _attention_forward(
        self, layer: int, module: nn.Module, tracer: Tracer
    ) -> Callable[..., Tuple[Tensor, None]]:
        at = cast("Attention", module)  # the self_attn of a layer of self._layers()
        return hf_attention_forward(
            at,
            layer,
            tracer,
            (at.q_proj, at.k_proj, at.v_proj, at.out_proj),
            at.head_dim,
            at.scale,
            at.dropout or 0.0,  # transformers types it Optional
        )

    def _pooling_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        if self._head is None:
            return []
        head = self._head
        pool = siglip_head_forward(head, self._views, tracer)

        def forward(hidden_state: Tensor, attention_mask: Any = None) -> Tensor:
            if attention_mask is not None and not bool(attention_mask.all()):
                raise NotImplementedError("padded SigLIP 2 inputs are not supported")
            return pool(hidden_state)

        return [(head, "forward", forward)]

    def _end_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        if self.siglip2:
            raise NotImplementedError(self.relevance_gaps()[0])
        emb, vm, head = self.vm.embeddings, self.vm, self._head

        def embeddings_forward(
            pixel_values: Tensor, interpolate_pos_encoding: bool = False
        ) -> Tensor:
            # CLIP/SiglipVisionEmbeddings.forward, the positional sum routed
            if interpolate_pos_encoding:
                raise NotImplementedError("interpolate_pos_encoding while tracing")
            x = emb.patch_embedding(pixel_values.to(emb.patch_embedding.weight.dtype))
            x = x.flatten(2).transpose(1, 2)
            if head is None:  # CLIP's class token
                cls = cast("CLIPVisionEmbeddings", emb).class_embedding
                x = torch.cat([cls.expand(x.shape[0], 1, -1), x], dim=1)
            return tracer.embed_add(x, emb.position_embedding(emb.position_ids))

        def vision_forward(
            pixel_values: Tensor, interpolate_pos_encoding: bool = False, **kw: Any
        ) -> Any:
            # CLIP/SiglipVisionModel.forward, the class token's pooling routed
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            x = emb(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
            if head is None:  # CLIP
                x = cast("CLIPVisionModel", vm).pre_layrnorm(x)
            x = vm.encoder(inputs_embeds=x).last_hidden_state
            if head is not None:  # SigLIP
                x = vm.post_layernorm(x)
                pooled = head(x)
            else:
                pooled = vm.post_layernorm(read_queries(tracer, x, [0]))
            return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled)

        return [(emb, "forward", embeddings_forward), (vm, "forward", vision_forward)]
