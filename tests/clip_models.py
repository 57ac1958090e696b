"""Tiny random-init vision-language models of every supported family (and
timm attention-pooled classifiers), for the CLIP tests: open_clip ``CLIP``
(class-token, average and attentional pooling; a timm image tower), Hugging
Face ``CLIPModel`` / ``CLIPVisionModelWithProjection`` / ``SiglipModel`` /
``SiglipVisionModel`` / ``Siglip2Model``, timm ``global_pool="map"``.

Image towers take 32x32 images in 8 px patches (4x4 grid); text towers a
context of 8 tokens of open_clip's ``SimpleTokenizer`` (CLIP's BPE ids, so the
vocabulary is CLIP's 49408) or, for Hugging Face, ids below 100.
"""

from __future__ import annotations

import torch

from tests.models import sharpen_, timm_vit

IMG, PATCH, WIDTH, LAYERS, HEADS, EMBED, CONTEXT = 32, 8, 32, 2, 2, 16, 8
PROMPTS = ["a red disk", "a blue square", "a green ring"]

_TEXT = dict(context_length=CONTEXT, vocab_size=49408, width=32, heads=2, layers=1)


def _sharpen_open_clip(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Scale the visual attention weights (non-uniform attention)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("visual."):
                continue
            if name.endswith(("in_proj_weight", "q_proj_weight", "k_proj_weight")):
                p.mul_(3.0)
            if name.endswith("bias") or "ln" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def open_clip_model(seed: int = 0, **vision) -> torch.nn.Module:
    """A tiny ``open_clip.CLIP``; ``vision`` overrides its ``vision_cfg``
    (``pool_type="avg"``, ``attentional_pool=True``, ...)."""
    import open_clip

    torch.manual_seed(seed)
    cfg = dict(
        image_size=IMG, patch_size=PATCH, width=WIDTH, layers=LAYERS,
        head_width=WIDTH // HEADS, mlp_ratio=2.0,
    )
    cfg.update(vision)
    model = open_clip.CLIP(EMBED, cfg, _TEXT)
    return _sharpen_open_clip(model, seed).eval()


def open_clip_attnpool(seed: int = 0) -> torch.nn.Module:
    """open_clip's attentional pooler (CoCa style), 3 queries, 2 heads."""
    return open_clip_model(
        seed, attentional_pool=True, attn_pooler_queries=3, attn_pooler_heads=2
    )


def open_clip_timm_tower(seed: int = 0, **timm_kwargs) -> torch.nn.Module:
    """An open_clip ``CLIP`` whose image tower is a ``TimmModel`` holding a
    tiny timm ViT (``global_pool="map"``, no class token: SigLIP's layout)
    with open_clip's linear projection head."""
    import open_clip

    torch.manual_seed(seed)
    vision = dict(
        image_size=IMG, timm_model_name="vit_tiny_patch16_224", timm_pool="",
        timm_proj="linear",
    )
    model = open_clip.CLIP(EMBED, vision, _TEXT)
    kw = dict(global_pool="map", class_token=False, num_classes=0)
    kw.update(timm_kwargs)
    trunk = timm_vit(seed, **kw)
    model.visual.trunk = trunk
    model.visual.head.proj = torch.nn.Linear(trunk.num_features, EMBED, bias=False)
    return model.eval()


def _hf_configs(**vision):
    v = dict(
        hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, image_size=IMG, patch_size=PATCH,
    )
    v.update(vision)
    t = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, vocab_size=100, max_position_embeddings=CONTEXT,
        bos_token_id=98, eos_token_id=99, pad_token_id=0,
    )
    return v, t


def _sharpen_hf(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "vision" not in name and name.split(".")[0] not in ("embeddings",):
                if not name.startswith(("encoder", "head", "post_layernorm")):
                    continue
            if name.endswith(("q_proj.weight", "k_proj.weight", "in_proj_weight")):
                p.mul_(3.0)
            if name.endswith("bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def hf_clip(seed: int = 0, attn_implementation: str = "sdpa") -> torch.nn.Module:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    v, t = _hf_configs()
    cfg = CLIPConfig(vision_config=v, text_config=t, projection_dim=EMBED)
    cfg._attn_implementation = attn_implementation
    model = CLIPModel(cfg)
    model.set_attn_implementation(attn_implementation)
    return _sharpen_hf(model, seed).eval()


def hf_clip_vision(seed: int = 0, attn_implementation: str = "sdpa"):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    v, _ = _hf_configs()
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**v, projection_dim=EMBED))
    model.set_attn_implementation(attn_implementation)
    return _sharpen_hf(model, seed).eval()


def hf_siglip(seed: int = 0, attn_implementation: str = "sdpa") -> torch.nn.Module:
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(seed)
    v, t = _hf_configs()
    model = SiglipModel(SiglipConfig(vision_config=v, text_config=t))
    model.set_attn_implementation(attn_implementation)
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-1.0)
        model.vision_model.head.probe.normal_(generator=torch.Generator().manual_seed(seed))
    return _sharpen_hf(model, seed).eval()


def hf_siglip_vision(seed: int = 0, attn_implementation: str = "sdpa"):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    v, _ = _hf_configs()
    model = SiglipVisionModel(SiglipVisionConfig(**v))
    model.set_attn_implementation(attn_implementation)
    return _sharpen_hf(model, seed).eval()


def hf_siglip2(seed: int = 0, attn_implementation: str = "sdpa") -> torch.nn.Module:
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(seed)
    v, t = _hf_configs()
    v.pop("image_size")
    v["num_patches"] = (IMG // PATCH) ** 2
    model = Siglip2Model(Siglip2Config(vision_config=v, text_config=t))
    model.set_attn_implementation(attn_implementation)
    return _sharpen_hf(model, seed).eval()


def timm_map(seed: int = 0, **kwargs) -> torch.nn.Module:
    """A tiny timm ViT classifier with attention pooling (no class token,
    SigLIP's layout unless overridden)."""
    kw = dict(global_pool="map", class_token=False)
    kw.update(kwargs)
    model = timm_vit(seed, **kw)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        model.attn_pool.latent.normal_(generator=g)
        model.attn_pool.q.weight.mul_(3.0)
        model.attn_pool.kv.weight.mul_(3.0)
    return sharpen_(model, seed).eval()
