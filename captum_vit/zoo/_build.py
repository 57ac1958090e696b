"""Construction of zoo models from their JSON config (private plumbing)."""

from typing import Any, Dict

import torch

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


def build_vit(config: Dict[str, Any]) -> torch.nn.Module:
    """A randomly initialised timm ``VisionTransformer`` from a config dict."""
    from timm.models.vision_transformer import VisionTransformer

    kwargs = {k: config[k] for k in _VIT_KEYS if k in config}
    return VisionTransformer(**kwargs)


def build_model(config: Dict[str, Any]) -> torch.nn.Module:
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


def last_layer_cls_attention(
    model: torch.nn.Module, images: torch.Tensor
) -> torch.Tensor:
    """Head-mean attention of the class token to every patch token in the last
    block of a timm ViT, ``(B, num_patches)``; used to check where the model
    looks. Recomputed from the block's input with the block's own ``qkv``."""
    block = model.blocks[-1]
    attn = block.attn
    captured = {}
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
