"""Tiny random-init models of the three families, carrying the same weights.

``timm_vit()`` builds a small timm ViT whose weights are sharpened (as the
reference data of tests/attr/data/chefer do) so that attention is clearly
non-uniform; ``hf_vit_from_timm`` / ``torchvision_vit_from_timm`` copy its
weights into the other families' classes.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

IMG, PATCH, DIM, DEPTH, HEADS, CLASSES = 32, 8, 32, 2, 2, 5


def sharpen_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Scale attention/MLP weights and add bias noise: non-uniform attention."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("qkv.weight"):
                p.mul_(6.0)
            elif name.endswith(("proj.weight", "fc1.weight", "fc2.weight")):
                p.mul_(3.0)
            elif name == "head.weight":
                p.mul_(10.0)
            elif name == "pos_embed":
                p.mul_(5.0)
            if name.endswith("bias") and not name.startswith("patch_embed"):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
            if "norm" in name and name.endswith("weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def timm_vit(seed: int = 0, distilled: bool = False, **kwargs) -> VisionTransformer:
    """The tiny timm ViT (``distilled=True``: timm's distilled DeiT with the
    same sizes), seeded and sharpened."""
    from timm.models.deit import VisionTransformerDistilled

    torch.manual_seed(seed)
    cfg = dict(
        img_size=IMG,
        patch_size=PATCH,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        num_classes=CLASSES,
        qkv_bias=True,
    )
    cfg.update(kwargs)
    cls = VisionTransformerDistilled if distilled else VisionTransformer
    return sharpen_(cls(**cfg), seed).eval()


def hf_config(config_cls, **kwargs):
    """A Hugging Face ViT/DeiT config of the tiny model's sizes."""
    cfg = dict(
        hidden_size=DIM,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        intermediate_size=2 * DIM,
        image_size=IMG,
        patch_size=PATCH,
        num_labels=CLASSES,
    )
    cfg.update(kwargs)
    return config_cls(**cfg)


def hf_vit_from_timm(model: VisionTransformer, attn_implementation: str = "sdpa"):
    """The same weights in Hugging Face's class: ``ViTForImageClassification``
    for a timm ViT, ``DeiTForImageClassificationWithTeacher`` for a timm
    distilled DeiT (both heads averaged, as both models do)."""
    from transformers import (
        DeiTConfig,
        DeiTForImageClassificationWithTeacher,
        ViTConfig,
        ViTForImageClassification,
    )

    distilled = getattr(model, "dist_token", None) is not None
    D = model.embed_dim
    config_cls = DeiTConfig if distilled else ViTConfig
    cfg = config_cls(
        hidden_size=D,
        num_hidden_layers=len(model.blocks),
        num_attention_heads=model.blocks[0].attn.num_heads,
        intermediate_size=model.blocks[0].mlp.fc1.out_features,
        image_size=model.patch_embed.img_size[0],
        patch_size=model.patch_embed.patch_size[0],
        num_labels=model.num_classes,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        qkv_bias=True,
        attn_implementation=attn_implementation,
    )
    if distilled:
        hf, e = DeiTForImageClassificationWithTeacher(cfg), "deit."
    else:
        hf, e = ViTForImageClassification(cfg), "vit."
    sd = model.state_dict()
    new = {
        e + "embeddings.cls_token": sd["cls_token"],
        e + "embeddings.position_embeddings": sd["pos_embed"],
        e + "embeddings.patch_embeddings.projection.weight": sd[
            "patch_embed.proj.weight"
        ],
        e + "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        e + "layernorm.weight": sd["norm.weight"],
        e + "layernorm.bias": sd["norm.bias"],
    }
    heads = {"classifier": "head"}
    if distilled:
        new[e + "embeddings.distillation_token"] = sd["dist_token"]
        heads = {"cls_classifier": "head", "distillation_classifier": "head_dist"}
    for hn, tn in heads.items():
        for s in ("weight", "bias"):
            new[f"{hn}.{s}"] = sd[f"{tn}.{s}"]
    for i in range(len(model.blocks)):
        b, h = f"blocks.{i}.", f"{e}layers.{i}."
        for n, (w, bias) in zip(
            ("q_proj", "k_proj", "v_proj"),
            zip(sd[b + "attn.qkv.weight"].split(D), sd[b + "attn.qkv.bias"].split(D)),
        ):
            new[h + f"attention.{n}.weight"] = w
            new[h + f"attention.{n}.bias"] = bias
        pairs = {
            "attention.o_proj": "attn.proj",
            "layernorm_before": "norm1",
            "layernorm_after": "norm2",
            "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2",
        }
        for hn, tn in pairs.items():
            for s in ("weight", "bias"):
                new[h + f"{hn}.{s}"] = sd[b + f"{tn}.{s}"]
    hf.load_state_dict(new, strict=True)
    return hf.eval()


def torchvision_vit_from_timm(model: VisionTransformer):
    from torchvision.models import VisionTransformer as TVViT

    blk = model.blocks[0]
    tv = TVViT(
        image_size=model.patch_embed.img_size[0],
        patch_size=model.patch_embed.patch_size[0],
        num_layers=len(model.blocks),
        num_heads=blk.attn.num_heads,
        hidden_dim=model.embed_dim,
        mlp_dim=blk.mlp.fc1.out_features,
        num_classes=model.num_classes,
    )
    sd = model.state_dict()
    new = {
        "class_token": sd["cls_token"],
        "conv_proj.weight": sd["patch_embed.proj.weight"],
        "conv_proj.bias": sd["patch_embed.proj.bias"],
        "encoder.pos_embedding": sd["pos_embed"],
        "encoder.ln.weight": sd["norm.weight"],
        "encoder.ln.bias": sd["norm.bias"],
        "heads.head.weight": sd["head.weight"],
        "heads.head.bias": sd["head.bias"],
    }
    for i in range(len(model.blocks)):
        b, t = f"blocks.{i}.", f"encoder.layers.encoder_layer_{i}."
        pairs = {
            "self_attention.in_proj_": "attn.qkv.",
            "self_attention.out_proj.": "attn.proj.",
            "ln_1.": "norm1.",
            "ln_2.": "norm2.",
            "mlp.0.": "mlp.fc1.",
            "mlp.3.": "mlp.fc2.",
        }
        for tn, mn in pairs.items():
            for s in ("weight", "bias"):
                new[t + tn + s] = sd[b + mn + s]
    tv.load_state_dict(new, strict=True)
    return tv.eval()


def images(n: int = 4, seed: int = 1, size: int = IMG) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)
