"""Construction of zoo models from their JSON config (private plumbing)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Union, cast

import torch

if TYPE_CHECKING:  # pragma: no cover
    from open_clip import CLIP  # untyped: Any to the type checker
    from timm.layers import Attention
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import Block, VisionTransformer

    #: what :func:`build_model` builds
    ZooClassifier = Union[VisionTransformer, SwinTransformer]

#: Keys of a model config passed on to timm's ``VisionTransformer``.
_VIT_KEYS = (
    "img_size",
    "patch_size",
    "in_chans",
    "num_classes",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "class_token",
    "global_pool",
    "dynamic_img_size",
)


#: Keys of a model config passed on to timm's ``SwinTransformer``.
_SWIN_KEYS = (
    "img_size",
    "patch_size",
    "in_chans",
    "num_classes",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "mlp_ratio",
    "qkv_bias",
    "global_pool",
    "drop_path_rate",
)
VIT = "timm.models.vision_transformer.VisionTransformer"
SWIN = "timm.models.swin_transformer.SwinTransformer"


def build_vit(config: Dict[str, Any]) -> VisionTransformer:
    """A randomly initialised timm ``VisionTransformer`` from a config dict."""
    from timm.models.vision_transformer import VisionTransformer

    kwargs = {k: config[k] for k in _VIT_KEYS if k in config}
    return VisionTransformer(**kwargs)


def build_model(config: Dict[str, Any]) -> ZooClassifier:
    """A randomly initialised zoo model of the config's ``architecture``
    (timm ``VisionTransformer`` when absent, or timm ``SwinTransformer``)."""
    arch = config.get("architecture", VIT)
    if arch == VIT:
        return build_vit(config)
    if arch == SWIN:
        from timm.models.swin_transformer import SwinTransformer

        kwargs = {k: config[k] for k in _SWIN_KEYS if k in config}
        if config.get("dynamic_img_size"):
            kwargs["strict_img_size"] = False
        return SwinTransformer(**kwargs)
    raise ValueError(f"unknown zoo architecture {arch!r}; known: {VIT}, {SWIN}")


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(
            "CLIP zoo models are open_clip models: pip install 'captum-vit[clip]'"
        ) from err
    return open_clip


def build_clip(config: Dict[str, Any]) -> CLIP:
    """A randomly initialised ``open_clip.CLIP`` from a config dict with
    ``embed_dim``, ``vision_cfg``, ``text_cfg`` and optionally ``quick_gelu``
    (the arguments of ``open_clip.CLIP``)."""
    open_clip = _import_open_clip()
    return open_clip.CLIP(
        embed_dim=config["embed_dim"],
        vision_cfg=dict(config["vision_cfg"]),
        text_cfg=dict(config["text_cfg"]),
        quick_gelu=config.get("quick_gelu", False),
    )


def clip_tokenizer(config: Dict[str, Any]) -> Callable[..., torch.Tensor]:
    """open_clip's ``SimpleTokenizer`` (CLIP's BPE vocabulary) with the
    context length of the config's text tower."""
    open_clip = _import_open_clip()
    return open_clip.SimpleTokenizer(
        context_length=config["text_cfg"]["context_length"]
    )


# The token embedding of a CLIP trained on a small vocabulary is zero outside
# the rows of the tokens it saw: the weights file keeps only the other rows.
_TOKEN_EMBEDDING = "token_embedding.weight"
_TOKEN_ROWS = "token_embedding.rows"
_TOKEN_VALUES = "token_embedding.values"


def pack_token_embedding(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` with the token embedding replaced by its non-zero rows
    (``token_embedding.values``) and their indices (``token_embedding.rows``)."""
    state = dict(state)
    weight = state.pop(_TOKEN_EMBEDDING)
    rows = torch.nonzero(weight.abs().sum(dim=1) > 0).flatten()
    state[_TOKEN_ROWS] = rows.to(torch.int64)
    state[_TOKEN_VALUES] = weight[rows]
    return state


def unpack_token_embedding(
    state: Dict[str, torch.Tensor], vocab_size: int
) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`pack_token_embedding`: the full ``(vocab_size, D)``
    token embedding, zero outside the stored rows."""
    state = dict(state)
    rows, values = state.pop(_TOKEN_ROWS), state.pop(_TOKEN_VALUES)
    weight = values.new_zeros(vocab_size, values.shape[1])
    weight[rows] = values
    state[_TOKEN_EMBEDDING] = weight
    return state


def last_layer_cls_attention(
    model: VisionTransformer, images: torch.Tensor
) -> torch.Tensor:
    """Head-mean attention of the class token to every patch token in the last
    block of a timm ViT, ``(B, num_patches)``; used to check where the model
    looks. Recomputed from the block's input with the block's own ``qkv``."""
    block = cast("Block", model.blocks[-1])
    attn = cast("Attention", block.attn)
    captured: Dict[str, torch.Tensor] = {}
    handle = block.norm1.register_forward_hook(
        lambda m, a, out: captured.__setitem__("x", out)
    )
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    x = captured["x"]
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    probs = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    prefix = getattr(model, "num_prefix_tokens", 1)
    return probs[:, :, 0, prefix:].mean(dim=1)
