r"""Adapters for open_clip (``open-clip-torch``, the extra ``clip``).

* :class:`OpenCLIPAdapter`: ``open_clip.CLIP`` / ``CustomTextCLIP`` whose
  image tower is open_clip's own ``VisionTransformer`` (or that tower alone):
  class token, ``ln_pre`` after the positional sum, pre-norm
  ``ResidualAttentionBlock`` with ``nn.MultiheadAttention`` (batch first),
  ``ln_post`` and the projection ``proj``. Its pooling is the class token
  (``pool_type="tok"``), the patch mean (``"avg"``) or the attentional pooler
  (``attentional_pool=True``, CoCa style: learnt queries attend over the
  tokens, ``ln_post`` then applies to their outputs, the first is read).
* :class:`OpenCLIPTimmAdapter`: open_clip models whose image tower is a timm
  model (``TimmModel``, e.g. the SigLIP towers, ``timm_pool="map"``): the timm
  adapter of the trunk, followed by open_clip's projection head.

:meth:`~ViTAdapter.forward` returns the image embedding, the
model's ``encode_image`` (unnormalised, ``(B, embed_dim)``); with a text
tower, :meth:`encode_text` embeds prompts, and
:func:`captum_vit.text_similarity` explains the image-text similarity.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from torch import Tensor, nn

from ._base import (
    EmbeddingParts,
    HeadParts,
    Tracer,
    UnsupportedModelError,
    ViTAdapter,
)
from ._delegate import DelegatingAdapter
from ._mha import MHAAdapter, check_mha
from ._parts import (
    OwnedView,
    check_divisible,
    check_fixed_size,
    mlp_parts,
    present,
    routed_block,
)
from ._pooling import AttentionalPoolerForward, read_queries
from ._text import TextTower

if TYPE_CHECKING:  # open_clip has no type information: these are Any
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    #: an open_clip model with a text tower
    OpenCLIP = Union[CLIP, CustomTextCLIP]

__all__ = ["OpenCLIPAdapter", "OpenCLIPTimmAdapter", "ProjectionView"]

_TOWERS = ("CLIP", "CustomTextCLIP")


def _is_open_clip(model: nn.Module) -> bool:
    return type(model).__module__.startswith("open_clip")


def _tower(model: nn.Module) -> Optional[nn.Module]:
    """The image tower of an open_clip model (or the model, if a tower)."""
    if not _is_open_clip(model):
        return None
    if type(model).__name__ in _TOWERS:
        return getattr(model, "visual", None)
    return model


def _check_tower(model: nn.Module) -> Union[VisionTransformer, TimmModel]:
    """:func:`_tower`, or :class:`UnsupportedModelError` where there is none
    (an adapter made directly for a model that is not open_clip's)."""
    tower = _tower(model)
    if tower is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} is not an open_clip model with an image tower"
        )
    return tower


class ProjectionView(OwnedView):
    r"""A bare projection matrix used as ``x @ P`` (open_clip's ``proj``,
    ``text_projection``) as a linear layer without bias:
    :math:`y = x P = x W^\top` with ``weight`` :math:`W = P^\top` (read from
    the owner on every call; no parameter of its own).

    Args:
        owner (torch.nn.Module): the module holding the matrix.
        name (str): its attribute name.
    """

    @property
    def weight(self) -> Tensor:
        return self._tensor.T

    @property
    def bias(self) -> None:
        return None

    @property
    def in_features(self) -> int:
        return int(self._tensor.shape[0])

    @property
    def out_features(self) -> int:
        return int(self._tensor.shape[1])

    def forward(self, x: Tensor) -> Tensor:
        return x @ self._tensor


class OpenCLIPText(TextTower):
    """The text tower of an open_clip ``CLIP`` / ``CustomTextCLIP``."""

    def __init__(self, model: OpenCLIP) -> None:
        self.model = model
        text = getattr(model, "text", model)  # CustomTextCLIP keeps it apart
        self.context_length = int(getattr(text, "context_length", 0) or 0)
        emb = getattr(text, "token_embedding", None)
        self.vocab_size = int(emb.num_embeddings) if emb is not None else None

    def default_tokenizer(self) -> Callable[..., Any]:
        if self.vocab_size != 49408 or not self.context_length:
            raise ValueError(
                "this open_clip model's text tower is not CLIP's BPE vocabulary: pass "
                "its tokenizer (tokenizer=open_clip.get_tokenizer(MODEL_NAME))"
            )
        import open_clip

        return open_clip.SimpleTokenizer(context_length=self.context_length)

    def tokenize(self, texts: Sequence[str], tokenizer: Any) -> Any:
        tokens = tokenizer(list(texts))
        if not isinstance(tokens, Tensor):
            tokens = tokens["input_ids"]
        self.check_ids(tokens, self.vocab_size, self.context_length, exact=True)
        return tokens

    def embed(self, tokens: Any) -> Tensor:
        device = self.model.logit_scale.device
        return self.model.encode_text(tokens.to(device))

    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.detach().exp()

    def logit_bias(self) -> Optional[Tensor]:
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else bias.detach()


class OpenCLIPAdapter(MHAAdapter):
    """Adapter for an open_clip ``CLIP`` / ``CustomTextCLIP`` with open_clip's
    own ``VisionTransformer`` image tower, or that tower alone.

    Args:
        model (torch.nn.Module): the open_clip model (batch-first blocks,
            open_clip >= 2.24), in eval mode for deterministic maps.
    """

    family = (
        "open_clip CLIP / CustomTextCLIP / VisionTransformer (ViT image tower: "
        "class-token, average or attentional pooling)"
    )

    model: Union[OpenCLIP, VisionTransformer]
    visual: VisionTransformer
    num_prefix_tokens = 1
    has_class_token = True

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        tower = _tower(model)
        return tower is not None and type(tower).__name__ == "VisionTransformer"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        from open_clip.transformer import ResidualAttentionBlock

        v = self.visual = _check_tower(model)
        self.text = OpenCLIPText(model) if v is not model else None
        if not v.transformer.batch_first:
            raise UnsupportedModelError(
                "open_clip towers with sequence-first blocks (open_clip < 2.24) are "
                "not supported; update open-clip-torch"
            )
        for i, blk in enumerate(v.transformer.resblocks):
            if type(blk) is not ResidualAttentionBlock:
                raise UnsupportedModelError(
                    f"open_clip block {i} is {type(blk).__name__}: the custom blocks "
                    "(qk norm, scaled cosine attention, head scales) are not "
                    "supported, only ResidualAttentionBlock"
                )
            check_mha(blk.attn, f"open_clip block {i}")
        if v.attn_pool is not None and getattr(v, "attn_pool_contrastive", None):
            raise UnsupportedModelError(
                "open_clip's parallel/cascade attentional pooling is not supported "
                "(only attentional_pool=True)"
            )
        if v.attn_pool is None and v.pool_type not in ("tok", "avg"):
            raise UnsupportedModelError(
                f"open_clip pool_type={v.pool_type!r} returns every token: there is "
                "no pooled embedding to explain"
            )
        self._make_in_proj()
        self._proj = ProjectionView(v, "proj") if v.proj is not None else None
        self._pooler: Optional[AttentionalPoolerForward] = None
        if v.attn_pool is not None:
            Q = v.attn_pool.query.shape[0]
            queries = [0] if v.pool_type == "tok" else list(range(1, Q))
            if v.pool_type == "none":
                raise UnsupportedModelError(
                    "open_clip attentional pooling with pool_type='none' returns "
                    "every query: there is no pooled embedding to explain"
                )
            self._pooler = AttentionalPoolerForward(v.attn_pool, queries)

    # ------------------------------------------------------------ description
    @property
    def pooling(self) -> str:
        if self._pooler is not None:
            return "attention"
        return "token" if self.visual.pool_type == "tok" else "avg"

    @property
    def patch_size(self) -> Tuple[int, int]:
        return tuple(self.visual.patch_size)

    @property
    def num_classes(self) -> int:
        return int(self.visual.output_dim)

    def blocks(self) -> List[nn.Module]:
        return list(self.visual.transformer.resblocks)

    def embedding_parts(self) -> EmbeddingParts:
        v = self.visual
        return EmbeddingParts(
            v.conv1, post_norm=v.ln_pre if present(v.ln_pre) else None
        )

    def head_parts(self) -> HeadParts:
        v = self.visual
        after_pool = self._pooler is not None or v.final_ln_after_pool
        proj = [self._proj] if self._proj is not None else [nn.Identity()]
        return HeadParts(
            None if after_pool else v.ln_post,
            proj,
            fc_norm=v.ln_post if after_pool else None,
            pooler=self._pooler.parts() if self._pooler is not None else (),
        )

    def relevance_gaps(self) -> List[str]:
        return []

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        check_fixed_size(image_size, self.visual.image_size, "open_clip tower")
        check_divisible(image_size, self.patch_size)

    def text_tower(self) -> Optional[TextTower]:
        return self.text

    def _call_model(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if self.text is not None:
            return self.model.encode_image(inputs, *args, **kwargs)
        out = self.model(inputs, *args, **kwargs)
        return out[0] if isinstance(out, tuple) else out  # output_tokens

    # ----------------------------------------------------------------- head
    def _pool_tokens(self, tokens: Tensor, tracer: Tracer) -> List[Tensor]:
        # head_forward's final norm is ln_post on the tokens (norm) or on the
        # pooled vector (fc_norm); the attentional pooler reads its queries
        # after ln_post, which head_forward applies to the pooled vector:
        # the same for the first query (pool_type "tok")
        if self._pooler is None:
            return super()._pool_tokens(tokens, tracer)
        if self._pooler.queries != [0]:
            raise NotImplementedError(
                "head_forward of an open_clip attentional pooler read with "
                "pool_type='avg'"
            )
        x = self._pooler.bind(tracer)(tokens)
        return [read_queries(tracer, x, self._pooler.queries)]

    def _split_pooled(self, pooled: Tensor) -> List[Tensor]:
        if self._pooler is not None:
            raise ValueError(
                "pool_weights: the tokens of an open_clip tower with an attentional "
                "pooler cannot be pooled otherwise (the pooler changes their width)"
            )
        return super()._split_pooled(pooled)

    # ----------------------------------------------------------------- tracing
    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        blk: ResidualAttentionBlock = block

        def forward(
            q_x: Tensor,
            k_x: Optional[Tensor] = None,
            v_x: Optional[Tensor] = None,
            attn_mask: Optional[Tensor] = None,
        ) -> Tensor:
            if k_x is not None or v_x is not None:
                raise NotImplementedError("cross-attention blocks are not supported")

            def attend(h: Tensor) -> Tensor:
                mask = attn_mask.to(h.dtype) if attn_mask is not None else None
                return blk.attn(h, h, h, need_weights=False, attn_mask=mask)[0]

            norms, branches = (blk.ln_1, blk.ln_2), (blk.ls_1, blk.ls_2)
            return routed_block(layer, tracer, q_x, attend, blk.mlp, norms, branches)

        return forward

    def _pooling_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        if self._pooler is None:
            return []
        return [(self.visual.attn_pool, "forward", self._pooler.bind(tracer))]

    def _end_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        v = self.visual

        def _embeds(x: Tensor) -> Tensor:
            # VisionTransformer._embeds, the positional sum routed
            x = v.conv1(x)
            x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
            cls = v.class_embedding.to(x.dtype).view(1, 1, -1)
            x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
            x = tracer.embed_add(x, v.positional_embedding.to(x.dtype)[None])
            return v.ln_pre(v.patch_dropout(x))

        def _pool(x: Tensor) -> Tuple[Tensor, Tensor]:
            # VisionTransformer._pool, the pooling routed
            if self._pooler is not None:
                x = v.ln_post(v.attn_pool(x))
                return read_queries(tracer, x, self._pooler.queries), x
            if not v.final_ln_after_pool:
                x = v.ln_post(x)
            w = ViTAdapter.pool_weights(self, x.shape[1], x.device, x.dtype)
            pooled = tracer.pool(x, w)
            if v.final_ln_after_pool:
                pooled = v.ln_post(pooled)
            return pooled, x[:, 1:]

        proj = self._proj

        def forward(x: Tensor) -> Any:
            # VisionTransformer.forward, the projection through its view (so
            # that a relevance rule reaches it)
            pooled, tokens = v._pool(v.transformer(v._embeds(x)))
            if proj is not None:
                pooled = proj(pooled)
            return (pooled, tokens) if v.output_tokens else pooled

        return [
            (v, "_embeds", _embeds),
            (v, "_pool", _pool),
            (v, "forward", forward),
        ]


class OpenCLIPTimmAdapter(DelegatingAdapter):
    """Adapter for open_clip models whose image tower is a timm model
    (``open_clip.timm_model.TimmModel``: the SigLIP towers and other
    ``timm_model_name`` configs): the adapter of the timm trunk (timm ViT,
    ``global_pool="map"`` included; BEiT, EVA), then open_clip's head
    (projection or MLP, or nothing).

    Args:
        model (torch.nn.Module): the open_clip model, or its ``TimmModel``.
    """

    family = (
        "open_clip CLIP / CustomTextCLIP with a timm image tower (TimmModel: the "
        "timm adapter of the trunk, then open_clip's projection head)"
    )

    visual: TimmModel

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        tower = _tower(model)
        return tower is not None and type(tower).__name__ == "TimmModel"

    def __init__(self, model: nn.Module) -> None:
        from . import get

        tower = _check_tower(model)
        super().__init__(model, get(tower.trunk))
        self.visual = tower
        self.text = OpenCLIPText(model) if tower is not model else None
        parts: List[nn.Module] = []
        for name, module in tower.head.named_children():
            if name == "mlp":
                parts += mlp_parts(module)[0]
            elif name == "proj":
                parts.append(module)
            elif not isinstance(module, nn.Dropout):
                raise UnsupportedModelError(
                    f"open_clip TimmModel head {name!r} ({type(module).__name__}) "
                    "is not supported"
                )
        self._after = parts

    @property
    def num_classes(self) -> int:
        if self._after:
            weight = self._after[-1].weight
            assert isinstance(weight, Tensor)  # a linear layer (proj, or MLP fc2)
            return int(weight.shape[0])
        return int(self.inner.num_classes or self.visual.trunk.num_features)

    def after(self, output: Tensor) -> Tensor:
        return self.visual.head(output)

    @property
    def after_parts(self) -> Sequence[nn.Module]:
        return self._after

    def text_tower(self) -> Optional[TextTower]:
        return self.text
