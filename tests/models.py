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


# ------------------------------------------------------------------ Swin
#: the tiny Swin: 32x32 images, 4x4 patches, 4x4 windows; stage grids 8x8
#: (four windows, the second block shifted by 2) and 4x4 (one window)
SWIN = dict(
    img_size=IMG,
    patch_size=4,
    window_size=4,
    embed_dim=16,
    depths=(2, 2),
    num_heads=(2, 4),
    num_classes=CLASSES,
    drop_path_rate=0.0,
)


def sharpen_swin_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-uniform attention for a random-init timm Swin: larger query/key
    weights and position biases, noisy biases and norms (v2's residual
    post-norms start at zero in timm; here they are around one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("qkv.weight"):
                p.mul_(4.0)
            elif name.endswith("relative_position_bias_table"):
                p.mul_(60.0)
            elif name.endswith("cpb_mlp.2.weight"):
                p.mul_(20.0)
            elif name.endswith("logit_scale"):
                p.add_(0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith(("proj.weight", "fc1.weight", "fc2.weight")):
                p.mul_(2.0)
            elif name == "head.fc.weight":
                p.mul_(10.0)
            if name.endswith("bias") and "cpb" not in name and "table" not in name:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
    return model


def timm_swin(v2: bool = False, seed: int = 0, **kwargs) -> torch.nn.Module:
    """The tiny timm Swin (``v2``: ``SwinTransformerV2``), seeded, sharpened."""
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    torch.manual_seed(seed)
    cfg = dict(SWIN)
    cfg.update(kwargs)
    cls = SwinTransformerV2 if v2 else SwinTransformer
    return sharpen_swin_(cls(**cfg), seed).eval()


def _swin_blocks(model):
    return [
        (s, i, blk)
        for s, stage in enumerate(model.layers)
        for i, blk in enumerate(stage.blocks)
    ]


def hf_swin_from_timm(model: torch.nn.Module, attn_implementation: str = "sdpa"):
    """The same weights in Hugging Face's ``SwinForImageClassification``
    (``Swinv2ForImageClassification`` for a timm ``SwinTransformerV2``)."""
    from transformers import (
        SwinConfig,
        SwinForImageClassification,
        Swinv2Config,
        Swinv2ForImageClassification,
    )

    v2 = type(model).__name__ == "SwinTransformerV2"
    depths = [len(stage.blocks) for stage in model.layers]
    heads = [stage.blocks[0].attn.num_heads for stage in model.layers]
    kwargs = dict(
        image_size=model.patch_embed.img_size[0],
        patch_size=model.patch_embed.patch_size[0],
        embed_dim=model.embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=model.layers[0].blocks[0].attn.window_size[0],
        num_labels=model.num_classes,
        drop_path_rate=0.0,
        hidden_act="gelu",
    )
    if v2:
        hf, e = Swinv2ForImageClassification(Swinv2Config(**kwargs)), "swinv2."
    else:
        cfg = SwinConfig(**kwargs, attn_implementation=attn_implementation)
        hf, e = SwinForImageClassification(cfg), "swin."
    sd = model.state_dict()
    new = {
        e + "embeddings.patch_embeddings.projection.weight": sd[
            "patch_embed.proj.weight"
        ],
        e + "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        e + "embeddings.norm.weight": sd["patch_embed.norm.weight"],
        e + "embeddings.norm.bias": sd["patch_embed.norm.bias"],
        e + "layernorm.weight": sd["norm.weight"],
        e + "layernorm.bias": sd["norm.bias"],
        "classifier.weight": sd["head.fc.weight"],
        "classifier.bias": sd["head.fc.bias"],
    }
    for s in range(1, len(depths)):  # timm merges at the start of stage s
        for n in ("reduction.weight", "norm.weight", "norm.bias"):
            new[f"{e}encoder.layers.{s - 1}.downsample.{n}"] = sd[
                f"layers.{s}.downsample.{n}"
            ]
    for s, i, blk in _swin_blocks(model):
        b, h = f"layers.{s}.blocks.{i}.", f"{e}encoder.layers.{s}.blocks.{i}."
        D = blk.attn.qkv.in_features
        wq, wk, wv = sd[b + "attn.qkv.weight"].split(D)
        pairs = {
            "layernorm_before": "norm1",
            "layernorm_after": "norm2",
        }
        if v2:
            a = h + "attention.self."
            new[a + "query.weight"], new[a + "key.weight"] = wq, wk
            new[a + "value.weight"] = wv
            new[a + "query.bias"] = sd[b + "attn.q_bias"]
            new[a + "value.bias"] = sd[b + "attn.v_bias"]
            new[a + "logit_scale"] = sd[b + "attn.logit_scale"]
            for n in ("0.weight", "0.bias", "2.weight"):
                new[a + "continuous_position_bias_mlp." + n] = sd[
                    b + "attn.cpb_mlp." + n
                ]
            pairs.update(
                {
                    "attention.output.dense": "attn.proj",
                    "intermediate.dense": "mlp.fc1",
                    "output.dense": "mlp.fc2",
                }
            )
        else:
            a = h + "attention."
            bq, bk, bv = sd[b + "attn.qkv.bias"].split(D)
            for n, w, bias in (("q", wq, bq), ("k", wk, bk), ("v", wv, bv)):
                new[a + f"{n}_proj.weight"], new[a + f"{n}_proj.bias"] = w, bias
            new[a + "relative_position_bias.relative_position_bias_table"] = sd[
                b + "attn.relative_position_bias_table"
            ]
            pairs.update(
                {
                    "attention.o_proj": "attn.proj",
                    "mlp.fc1": "mlp.fc1",
                    "mlp.fc2": "mlp.fc2",
                }
            )
        for hn, tn in pairs.items():
            for x in ("weight", "bias"):
                new[h + f"{hn}.{x}"] = sd[b + f"{tn}.{x}"]
    hf.load_state_dict(new, strict=True)
    return hf.eval()


def torchvision_swin_from_timm(model: torch.nn.Module):
    """The same weights in torchvision's ``SwinTransformer`` (v2 blocks and
    patch merging for a timm ``SwinTransformerV2``)."""
    from torchvision.models import SwinTransformer as TVSwin
    from torchvision.models.swin_transformer import (
        PatchMergingV2,
        SwinTransformerBlockV2,
    )

    v2 = type(model).__name__ == "SwinTransformerV2"
    depths = [len(stage.blocks) for stage in model.layers]
    heads = [stage.blocks[0].attn.num_heads for stage in model.layers]
    window = list(model.layers[0].blocks[0].attn.window_size)
    extra = dict(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)
    tv = TVSwin(
        patch_size=list(model.patch_embed.patch_size),
        embed_dim=model.embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=window,
        stochastic_depth_prob=0.0,
        num_classes=model.num_classes,
        **(extra if v2 else {}),
    )
    sd = model.state_dict()
    new = dict(tv.state_dict())  # keeps torchvision's buffers
    new.update(
        {
            "features.0.0.weight": sd["patch_embed.proj.weight"],
            "features.0.0.bias": sd["patch_embed.proj.bias"],
            "features.0.2.weight": sd["patch_embed.norm.weight"],
            "features.0.2.bias": sd["patch_embed.norm.bias"],
            "norm.weight": sd["norm.weight"],
            "norm.bias": sd["norm.bias"],
            "head.weight": sd["head.fc.weight"],
            "head.bias": sd["head.fc.bias"],
        }
    )
    for s in range(1, len(depths)):
        for n in ("reduction.weight", "norm.weight", "norm.bias"):
            new[f"features.{2 * s}.{n}"] = sd[f"layers.{s}.downsample.{n}"]
    for s, i, blk in _swin_blocks(model):
        b, t = f"layers.{s}.blocks.{i}.", f"features.{1 + 2 * s}.{i}."
        new[t + "attn.qkv.weight"] = sd[b + "attn.qkv.weight"]
        if v2:
            new[t + "attn.qkv.bias"] = torch.cat(
                [sd[b + "attn.q_bias"], blk.attn.k_bias, sd[b + "attn.v_bias"]]
            )
            new[t + "attn.logit_scale"] = sd[b + "attn.logit_scale"]
            for n in ("0.weight", "0.bias", "2.weight"):
                new[t + "attn.cpb_mlp." + n] = sd[b + "attn.cpb_mlp." + n]
        else:
            new[t + "attn.qkv.bias"] = sd[b + "attn.qkv.bias"]
            new[t + "attn.relative_position_bias_table"] = sd[
                b + "attn.relative_position_bias_table"
            ]
        pairs = {
            "attn.proj.": "attn.proj.",
            "norm1.": "norm1.",
            "norm2.": "norm2.",
            "mlp.0.": "mlp.fc1.",
            "mlp.3.": "mlp.fc2.",
        }
        for tn, mn in pairs.items():
            for x in ("weight", "bias"):
                new[t + tn + x] = sd[b + mn + x]
    tv.load_state_dict(new, strict=True)
    return tv.eval()


#: the six tiny Swin families (same weights): name -> factory
SWIN_FAMILIES = {
    "timm_swin": lambda: timm_swin(),
    "timm_swinv2": lambda: timm_swin(v2=True),
    "hf_swin": lambda: hf_swin_from_timm(timm_swin()),
    "hf_swinv2": lambda: hf_swin_from_timm(timm_swin(v2=True)),
    "torchvision_swin": lambda: torchvision_swin_from_timm(timm_swin()),
    "torchvision_swinv2": lambda: torchvision_swin_from_timm(timm_swin(v2=True)),
}


# ------------------------------------------------ BEiT, EVA, DINOv2 families
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give random values to the parameters these families initialise to
    constants (relative position bias tables, ``q``/``v`` biases, layer
    scales, register tokens) and a unit-scale head, so that each matters."""
    g = torch.Generator().manual_seed(seed + 1)

    def noise(p, std):
        return std * torch.randn(p.shape, generator=g, dtype=torch.float32)

    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "relative_position_bias_table":
                p.copy_(noise(p, 1.0))
            elif leaf in ("q_bias", "v_bias"):
                p.copy_(noise(p, 0.3))
            elif leaf in ("gamma_1", "gamma_2", "gamma", "lambda1", "lambda_1"):
                p.copy_(1.0 + noise(p, 0.3))
            elif leaf in ("reg_token", "register_tokens", "cls_token"):
                p.copy_(noise(p, 1.0))
            elif name in ("head.weight", "classifier.weight"):
                p.copy_(noise(p, 0.5))
    return model


def timm_beit(seed: int = 0, **kwargs):
    """A tiny timm BEiT (relative position bias per layer, layer scale, mean
    pooling with ``fc_norm`` unless overridden), seeded and randomised."""
    from timm.models.beit import Beit

    torch.manual_seed(seed)
    cfg = dict(
        img_size=IMG,
        patch_size=PATCH,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        num_classes=CLASSES,
        use_rel_pos_bias=True,
        init_values=0.1,
    )
    cfg.update(kwargs)
    return randomize_(sharpen_(Beit(**cfg), seed), seed).eval()


def timm_eva(seed: int = 0, **kwargs):
    """A tiny timm EVA (absolute position embedding, GELU MLP, mean pooling
    with ``fc_norm``: EVA-01's layout unless overridden; EVA-02's is
    ``use_rot_pos_emb=True, swiglu_mlp=True, scale_mlp=True``)."""
    from timm.models.eva import Eva

    torch.manual_seed(seed)
    cfg = dict(
        img_size=IMG,
        patch_size=PATCH,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        num_classes=CLASSES,
    )
    cfg.update(kwargs)
    return randomize_(sharpen_(Eva(**cfg), seed), seed).eval()


EVA02 = dict(use_rot_pos_emb=True, swiglu_mlp=True, scale_mlp=True, init_values=0.1)


def hf_beit_from_timm(model, attn_implementation: str = "sdpa"):
    """The weights of a timm ``Beit`` in ``BeitForImageClassification``."""
    from transformers import BeitConfig, BeitForImageClassification

    blk = model.blocks[0]
    D = model.embed_dim
    cfg = BeitConfig(
        hidden_size=D,
        num_hidden_layers=len(model.blocks),
        num_attention_heads=blk.attn.num_heads,
        intermediate_size=blk.mlp.fc1.out_features,
        image_size=model.patch_embed.img_size[0],
        patch_size=model.patch_embed.patch_size[0],
        num_labels=model.num_classes,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        use_absolute_position_embeddings=model.pos_embed is not None,
        use_relative_position_bias=blk.attn.relative_position_bias_table is not None,
        use_shared_relative_position_bias=model.rel_pos_bias is not None,
        use_mean_pooling=model.global_pool == "avg",
        layer_scale_init_value=0.1 if blk.gamma_1 is not None else 0.0,
        attn_implementation=attn_implementation,
    )
    hf = BeitForImageClassification(cfg)
    sd = model.state_dict()
    new = dict(hf.state_dict())
    e = "beit.embeddings."
    new[e + "cls_token"] = sd["cls_token"]
    new[e + "patch_embeddings.projection.weight"] = sd["patch_embed.proj.weight"]
    new[e + "patch_embeddings.projection.bias"] = sd["patch_embed.proj.bias"]
    if model.pos_embed is not None:
        new[e + "position_embeddings"] = sd["pos_embed"]
    if model.rel_pos_bias is not None:
        new["beit.shared_position_bias.relative_position_bias_table"] = sd[
            "rel_pos_bias.relative_position_bias_table"
        ]
    final = (
        "beit.pooler.layernorm." if model.global_pool == "avg" else "beit.layernorm."
    )
    tfinal = "fc_norm." if model.global_pool == "avg" else "norm."
    for s in ("weight", "bias"):
        new[final + s] = sd[tfinal + s]
        new["classifier." + s] = sd["head." + s]
    for i, blk in enumerate(model.blocks):
        b, h = f"blocks.{i}.", f"beit.layers.{i}."
        q, k, v = sd[b + "attn.qkv.weight"].split(D)
        new[h + "attention.q_proj.weight"] = q
        new[h + "attention.k_proj.weight"] = k
        new[h + "attention.v_proj.weight"] = v
        new[h + "attention.q_proj.bias"] = sd[b + "attn.q_bias"]
        new[h + "attention.v_proj.bias"] = sd[b + "attn.v_bias"]
        if blk.attn.relative_position_bias_table is not None:
            new[h + "relative_position_bias.relative_position_bias_table"] = sd[
                b + "attn.relative_position_bias_table"
            ]
        if blk.gamma_1 is not None:
            new[h + "lambda_1"], new[h + "lambda_2"] = (
                sd[b + "gamma_1"],
                sd[b + "gamma_2"],
            )
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


def timm_dinov2(seed: int = 0, registers: int = 4, swiglu: bool = False, **kwargs):
    """A tiny timm ViT laid out as DINOv2 (class token, ``registers``
    register tokens without position embedding, layer scale, class-token
    pooling; ``swiglu``: DINOv2-g's SwiGLU MLP with Hugging Face's hidden
    size)."""
    from timm.layers import SwiGLU

    cfg = dict(reg_tokens=registers, no_embed_class=True, init_values=1.0)
    if swiglu:
        hidden = (int(DIM * 4 * 2 / 3) + 7) // 8 * 8  # Dinov2SwiGLUFFN's
        cfg.update(mlp_layer=SwiGLU, mlp_ratio=hidden / DIM, act_layer=torch.nn.SiLU)
    cfg.update(kwargs)
    return randomize_(timm_vit(seed, **cfg), seed).eval()


def hf_dinov2_from_timm(
    model, attn_implementation: str = "sdpa", mean_head: bool = False, seed: int = 0
):
    """The weights of a DINOv2-style timm ViT (:func:`timm_dinov2`) in
    ``Dinov2WithRegistersForImageClassification`` (or
    ``Dinov2ForImageClassification`` without registers).

    The Hugging Face head reads ``[class token, patch mean]``: its class-token
    half is timm's head and its mean half is zero (the two models compute the
    same logits) unless ``mean_head``, which gives the mean half random
    weights (seeded).
    """
    from transformers import (
        Dinov2Config,
        Dinov2ForImageClassification,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersForImageClassification,
    )

    R = model.reg_token.shape[1] if model.reg_token is not None else 0
    blk = model.blocks[0]
    D = model.embed_dim
    swiglu = hasattr(blk.mlp, "fc1_g")
    cfg = dict(
        hidden_size=D,
        num_hidden_layers=len(model.blocks),
        num_attention_heads=blk.attn.num_heads,
        mlp_ratio=4 if swiglu else blk.mlp.fc1.out_features // D,
        use_swiglu_ffn=swiglu,
        image_size=model.patch_embed.img_size[0],
        patch_size=model.patch_embed.patch_size[0],
        num_labels=model.num_classes,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        qkv_bias=True,
        attn_implementation=attn_implementation,
    )
    if R:
        cfg = Dinov2WithRegistersConfig(num_register_tokens=R, **cfg)
        hf, e = Dinov2WithRegistersForImageClassification(cfg), "dinov2_with_registers."
    else:
        hf, e = Dinov2ForImageClassification(Dinov2Config(**cfg)), "dinov2."
    sd = model.state_dict()
    new = dict(hf.state_dict())
    pos = sd["pos_embed"]
    if model.no_embed_class:  # no position for the class token
        pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    new[e + "embeddings.cls_token"] = sd["cls_token"]
    new[e + "embeddings.position_embeddings"] = pos
    if R:
        new[e + "embeddings.register_tokens"] = sd["reg_token"]
    new[e + "embeddings.patch_embeddings.projection.weight"] = sd[
        "patch_embed.proj.weight"
    ]
    new[e + "embeddings.patch_embeddings.projection.bias"] = sd["patch_embed.proj.bias"]
    new[e + "layernorm.weight"], new[e + "layernorm.bias"] = (
        sd["norm.weight"],
        sd["norm.bias"],
    )
    mean = torch.zeros_like(sd["head.weight"])
    if mean_head:
        g = torch.Generator().manual_seed(seed)
        mean = 0.5 * torch.randn(mean.shape, generator=g, dtype=torch.float32)
    new["classifier.weight"] = torch.cat([sd["head.weight"], mean.to(pos.dtype)], 1)
    new["classifier.bias"] = sd["head.bias"]
    mlp = {"gate_proj": "fc1_g", "up_proj": "fc1_x", "down_proj": "fc2"}
    if not swiglu:
        mlp = {"fc1": "fc1", "fc2": "fc2"}
    for i in range(len(model.blocks)):
        b, h = f"blocks.{i}.", f"{e}encoder.layer.{i}."
        qkv = zip(sd[b + "attn.qkv.weight"].split(D), sd[b + "attn.qkv.bias"].split(D))
        for n, (w, bias) in zip(("q_proj", "k_proj", "v_proj"), qkv):
            new[h + f"attention.{n}.weight"], new[h + f"attention.{n}.bias"] = w, bias
        pairs = {"attention.o_proj": "attn.proj", "norm1": "norm1", "norm2": "norm2"}
        pairs.update({f"mlp.{hn}": f"mlp.{tn}" for hn, tn in mlp.items()})
        for hn, tn in pairs.items():
            for s in ("weight", "bias"):
                new[h + f"{hn}.{s}"] = sd[b + f"{tn}.{s}"]
        for j in (1, 2):
            gamma = sd.get(b + f"ls{j}.gamma")
            if gamma is None:
                gamma = torch.ones(D, dtype=pos.dtype)
            new[h + f"layer_scale{j}.lambda1"] = gamma
    hf.load_state_dict(new, strict=True)
    return hf.to(pos.dtype).eval()


# ------------------------------------------------------------------- CaiT
def timm_cait(seed: int = 0, **kwargs):
    """A tiny timm CaiT (two talking-heads self-attention layers, one
    class-attention layer), seeded, sharpened and randomised; the
    talking-heads maps get weights near the identity, so that heads are mixed
    (with some negative weights) but the mixed attention is not near zero."""
    from timm.models.cait import Cait

    torch.manual_seed(seed)
    cfg = dict(
        img_size=IMG,
        patch_size=PATCH,
        embed_dim=DIM,
        depth=DEPTH,
        depth_token_only=1,
        num_heads=HEADS,
        num_classes=CLASSES,
        init_values=0.1,
    )
    cfg.update(kwargs)
    model = randomize_(sharpen_(Cait(**cfg), seed), seed)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("proj_l.weight", "proj_w.weight")):
                eye = torch.eye(p.shape[0], dtype=p.dtype)
                p.copy_(eye + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(("proj_l.bias", "proj_w.bias")):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif name.endswith(("attn.q.weight", "attn.k.weight")):
                p.mul_(6.0)
    return model.eval()
