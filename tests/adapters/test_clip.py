"""The vision-language and attention-pooled families (issue 14): open_clip
``CLIP`` (class-token, average, attentional pooling; a timm tower), Hugging
Face CLIP / SigLIP / SigLIP 2 and timm ``global_pool="map"``. The traced
forward is the model's own image embedding, the pooling row is the pooling
attention computed independently, the attention input is routed, the text
towers embed prompts as the models do and refuse tokenizers that do not fit,
and unsupported variants say why."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from captum_vit import adapters
from captum_vit.adapters import TokenizerMismatchError, Tracer
from tests.adapters.test_families import EndsTracer, _AttentionInputTracer
from tests.clip_models import (
    CONTEXT,
    PROMPTS,
    hf_clip,
    hf_clip_vision,
    hf_siglip,
    hf_siglip2,
    hf_siglip_vision,
    open_clip_attnpool,
    open_clip_model,
    open_clip_timm_tower,
    timm_map,
)
from tests.models import images, timm_vit


def _timm_map_latents():
    """timm attention pooling read as the mean of 3 probes (pool 'avg')."""
    from timm.layers import AttentionPoolLatent

    model = timm_map()
    torch.manual_seed(3)
    model.attn_pool = AttentionPoolLatent(
        32, num_heads=2, mlp_ratio=2.0, latent_len=3, pool_type="avg",
        norm_layer=torch.nn.LayerNorm,
    ).eval()
    with torch.no_grad():
        model.attn_pool.latent.normal_()
    return model


# name -> factory
FAMILIES = {
    "open_clip_token": open_clip_model,
    "open_clip_avg": lambda: open_clip_model(pool_type="avg"),
    "open_clip_ln_after_pool": lambda: open_clip_model(final_ln_after_pool=True),
    "open_clip_layer_scale": lambda: open_clip_model(ls_init_value=0.5),
    "open_clip_attnpool": open_clip_attnpool,
    "open_clip_timm_map": open_clip_timm_tower,
    "open_clip_timm_token": lambda: open_clip_timm_tower(
        global_pool="token", class_token=True
    ),
    "hf_clip_sdpa": hf_clip,
    "hf_clip_eager": lambda: hf_clip(attn_implementation="eager"),
    "hf_clip_vision": hf_clip_vision,
    "hf_siglip_sdpa": hf_siglip,
    "hf_siglip_eager": lambda: hf_siglip(attn_implementation="eager"),
    "hf_siglip_vision": hf_siglip_vision,
    "hf_siglip2": hf_siglip2,
    "timm_map": timm_map,
    "timm_map_class_token": lambda: timm_map(class_token=True),
    "timm_map_latents_avg": _timm_map_latents,
}


def _embedding(model, x):
    """The model's own image embedding, read without captum_vit."""
    name = type(model).__name__
    if name in ("CLIP", "CustomTextCLIP"):
        return model.encode_image(x)
    if name in ("CLIPModel", "SiglipModel"):
        return model.get_image_features(pixel_values=x).pooler_output
    if name == "CLIPVisionModelWithProjection":
        return model(pixel_values=x).image_embeds
    if name == "SiglipVisionModel":
        return model(pixel_values=x).pooler_output
    return model(x)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _x(n=3, dtype=torch.float32):
    return images(n).to(dtype)


# SigLIP 2 takes patchified inputs: test_siglip2_patches
@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "hf_siglip2"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_traced_forward_is_the_models_embedding(name, dtype, tol):
    """Blocks, attention and pooling routed through a tracer (with and
    without the ends, with only one layer explicit) compute the model's own
    image embedding; nothing is left on the model."""
    model = FAMILIES[name]().to(dtype)
    x = _x(dtype=dtype)
    a = adapters.get(model)
    if dtype == torch.float64 and "eager" in name:
        # Hugging Face's eager attention takes its softmax in float32 (see
        # tests/adapters/test_families.py): compare with the sdpa path
        model.set_attn_implementation("sdpa")
    expected = _embedding(model, x)
    assert expected.shape == (3, a.num_classes)
    if dtype == torch.float64 and "eager" in name:
        model.set_attn_implementation("eager")
    for tracer in (Tracer(keep_blocks=True), EndsTracer(), Tracer(layers=[1])):
        with a.trace(tracer):
            got = a.forward(x)
        assert got.dtype == dtype
        assert _rel(got, expected) < tol, type(tracer).__name__
        assert not any("forward" in m.__dict__ for m in model.modules())
    if a.pooling == "attention":
        assert tracer.pool_attention_probs is not None
    else:
        assert tracer.pool_row() is None


def test_siglip2_patches():
    """SigLIP 2 gets images cut into patches as its image processor cuts
    them (channels last within a patch, row-major), the whole grid, a full
    patch mask; its embedding of them is the traced one."""
    from transformers.models.siglip2.image_processing_siglip2 import (
        convert_image_to_patches,
    )

    model = hf_siglip2().double()
    a = adapters.get(model)
    x = _x(2, torch.float64)
    patches = torch.stack([convert_image_to_patches(img, 8) for img in x])
    out = model.get_image_features(
        pixel_values=patches,
        pixel_attention_mask=torch.ones(2, 16, dtype=torch.long),
        spatial_shapes=torch.tensor([[4, 4], [4, 4]]),
    ).pooler_output
    for tracer in (Tracer(), Tracer(layers=[0])):
        with a.trace(tracer):
            assert _rel(a.forward(x), out) < 1e-10
    assert a.relevance_gaps() and "patch embedding" in a.relevance_gaps()[0]
    with pytest.raises(ValueError, match="at most 16 patches"):
        a.check_image_size((40, 40))


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "hf_siglip2"])
def test_head_forward_reads_the_last_block(name):
    """The head applied to the last block's tokens is the model's output."""
    model = FAMILIES[name]().double()
    a = adapters.get(model)
    x = _x(2, torch.float64)
    with a.trace(Tracer(keep_blocks=True)) as tracer:
        out = a.forward(x)
    got = a.head_forward(tracer.block_outputs[a.num_layers - 1])
    assert _rel(got, out) < 1e-12


def _pool_probs_by_hand(name, model, x):
    """The pooling attention (head mean, pooled probes) computed by torch's
    own modules (``need_weights=True``) or from the pooler's parameters."""
    if name.startswith("hf_siglip"):
        vm = model.vision_model if hasattr(model, "vision_model") else model
        tokens = vm(pixel_values=x).last_hidden_state  # post_layernorm applied
        head = vm.head
        probe = head.probe.expand(x.shape[0], -1, -1)
        _, w = head.attention(probe, tokens, tokens, need_weights=True)
        return w[:, 0]
    if name == "open_clip_attnpool":
        v = model.visual
        z = v.transformer(v._embeds(x))
        k = v.attn_pool.ln_k(z)
        q = v.attn_pool.ln_q(v.attn_pool.query).expand(x.shape[0], -1, -1)
        _, w = v.attn_pool.attn(q, k, k, need_weights=True)
        return w[:, 0]
    trunk = model.visual.trunk if name.startswith("open_clip") else model
    ap = trunk.attn_pool
    z = trunk.forward_features(x)[:, trunk.num_prefix_tokens :]
    B, N, _ = z.shape
    q = ap.q(ap.latent).reshape(1, -1, ap.num_heads, ap.head_dim).transpose(1, 2)
    kv = ap.kv(z).reshape(B, N, 2, ap.num_heads, ap.head_dim).permute(2, 0, 3, 1, 4)
    p = (q @ kv[0].transpose(-1, -2) * ap.head_dim**-0.5).softmax(-1)
    rows = [0] if ap.pool == "token" else list(range(ap.latent_len))
    w = p[:, :, rows].mean((1, 2))
    return F.pad(w, (trunk.num_prefix_tokens, 0))


@pytest.mark.parametrize(
    "name",
    [
        "open_clip_attnpool",
        "open_clip_timm_map",
        "hf_siglip_sdpa",
        "hf_siglip_vision",
        "timm_map",
        "timm_map_class_token",
        "timm_map_latents_avg",
    ],
)
def test_pooling_row_is_the_pooling_attention(name):
    """The pooling row of an attention-pooled model (what attention methods
    read in place of the class-token row) is its pooling attention averaged
    over heads and the pooled probes, over the whole sequence, per sample."""
    model = FAMILIES[name]().double()
    a = adapters.get(model)
    assert a.pooling == "attention"
    x = _x(3, torch.float64)
    with a.trace(Tracer(layers=())) as tracer:
        a.forward(x)
    row = tracer.pool_row()
    with torch.no_grad():
        expected = _pool_probs_by_hand(name, model, x)
    torch.testing.assert_close(row, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(row.sum(-1), torch.ones(3, dtype=torch.float64))
    assert not torch.allclose(row[0], row[1])  # it depends on the image
    with pytest.raises(NotImplementedError, match="no static one"):
        a.pool_weights(row.shape[1])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_attention_input_feeds_the_attention(name):
    """Every family routes the first norm's output through
    ``Tracer.attention_input`` once per block, into the attention."""
    model = FAMILIES[name]().double()
    if "eager" in name:
        model.set_attn_implementation("sdpa")  # float64 softmax (see above)
    x = _x(2, torch.float64)
    ad = adapters.get(model)
    expected = ad.forward(x)
    same, scaled = _AttentionInputTracer(1.0), _AttentionInputTracer(0.5)
    with torch.no_grad():
        with ad.trace(same):
            got = ad.forward(x)
        with ad.trace(scaled):
            changed = ad.forward(x)
    assert [layer for layer, _ in same.calls] == list(range(ad.num_layers))
    assert all(shape[0] == 2 and len(shape) == 3 for _, shape in same.calls)
    assert _rel(got, expected) < 1e-10
    assert _rel(changed, expected) > 1e-6


def test_descriptions():
    cases = {
        "open_clip_token": (1, "token", 16),
        "open_clip_avg": (1, "avg", 16),
        "open_clip_attnpool": (1, "attention", 16),
        "open_clip_timm_map": (0, "attention", 16),
        "hf_clip_sdpa": (1, "token", 16),
        "hf_siglip_sdpa": (0, "attention", 32),
        "timm_map_class_token": (1, "attention", 5),
    }
    for name, (prefix, pooling, outputs) in cases.items():
        a = adapters.get(FAMILIES[name]())
        assert (a.num_prefix_tokens, a.pooling, a.num_classes) == (
            prefix,
            pooling,
            outputs,
        ), name
        assert a.grid_size((32, 32)) == (4, 4) and a.num_layers == 2
    with pytest.raises(ValueError, match="takes 32x32 images"):
        adapters.get(open_clip_model()).check_image_size((48, 48))


# ---------------------------------------------------------------- text towers
def _hf_tokenizer():
    """A word-level ``transformers`` tokenizer made offline (ids < 12)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "a", "red", "disk", "blue", "square", "green"]
    words += ["ring"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]"
    )


def test_open_clip_text_tower():
    import open_clip

    model = open_clip_model().double()
    tower = adapters.get(model).text_tower()
    tokenizer = open_clip.SimpleTokenizer(context_length=CONTEXT)
    expected = model.encode_text(tokenizer(PROMPTS))
    torch.testing.assert_close(tower.encode(PROMPTS), expected, rtol=0, atol=0)
    # the default tokenizer: CLIP's BPE at the model's context length
    torch.testing.assert_close(tower.encode(PROMPTS), expected, rtol=0, atol=0)
    torch.testing.assert_close(tower.logit_scale(), model.logit_scale.exp())
    assert tower.logit_bias() is None
    with pytest.raises(TokenizerMismatchError, match="exactly 8"):
        tower.encode(PROMPTS, open_clip.SimpleTokenizer(context_length=16))
    with pytest.raises(TokenizerMismatchError, match="vocabulary of 49408"):
        tower.encode(PROMPTS, lambda t: torch.full((len(t), CONTEXT), 60000))
    with pytest.raises(TokenizerMismatchError, match="token ids"):
        tower.encode(PROMPTS, lambda t: torch.zeros(len(t), CONTEXT))
    assert adapters.get(model.visual).text_tower() is None


@pytest.mark.parametrize("factory", [hf_clip, hf_siglip, hf_siglip2])
def test_hf_text_tower(factory):
    """A ``transformers`` tokenizer: CLIP prompts padded to the longest with
    the attention mask; SigLIP's padded to the full length without one (as
    they were trained)."""
    model = factory().double()
    siglip = "Siglip" in type(model).__name__
    tower = adapters.get(model).text_tower()
    tok = _hf_tokenizer()
    if siglip:
        enc = tok(PROMPTS, padding="max_length", max_length=CONTEXT, return_tensors="pt")
        expected = model.get_text_features(input_ids=enc["input_ids"])
    else:
        enc = tok(PROMPTS, padding=True, return_tensors="pt")
        expected = model.get_text_features(**enc)
    expected = getattr(expected, "pooler_output", expected)
    torch.testing.assert_close(tower.encode(PROMPTS, tok), expected, rtol=0, atol=0)
    if siglip:
        torch.testing.assert_close(tower.logit_bias(), model.logit_bias)
    import open_clip

    with pytest.raises(TokenizerMismatchError, match="vocabulary of 100"):
        tower.encode(PROMPTS, open_clip.SimpleTokenizer(context_length=CONTEXT))
    with pytest.raises(TokenizerMismatchError, match="at most 8"):
        tower.encode(PROMPTS, lambda t: torch.ones(len(t), 12, dtype=torch.long))
    with pytest.raises(ValueError, match="pass the model's tokenizer"):
        tower.encode(PROMPTS)
    assert adapters.get(hf_siglip_vision()).text_tower() is None


# ---------------------------------------------------------------- refusals
def test_unsupported_variants_say_why():
    import open_clip
    from timm.layers import AttentionPoolLatent

    text = dict(context_length=8, vocab_size=49408, width=32, heads=2, layers=1)
    vision = dict(image_size=32, patch_size=8, width=32, layers=1, head_width=16)
    cases = [
        (dict(vision, qk_norm=True), "custom blocks"),
        (dict(vision, attentional_pool="parallel"), "parallel/cascade"),
        (dict(vision, pool_type="none"), "no pooled embedding"),
    ]
    for cfg, message in cases:
        with pytest.raises(adapters.UnsupportedModelError, match=message):
            adapters.get(open_clip.CLIP(16, cfg, text))
    with pytest.raises(adapters.UnsupportedModelError, match="AttentionPoolPrr"):
        adapters.get(timm_vit(global_pool="prr"))
    model = timm_map()
    model.attn_pool = AttentionPoolLatent(32, num_heads=2, pool_type="")
    with pytest.raises(adapters.UnsupportedModelError, match="every probe"):
        adapters.get(model)
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, image_size=32, patch_size=8, vision_use_head=False,
    )
    with pytest.raises(adapters.UnsupportedModelError, match="vision_use_head"):
        adapters.get(SiglipVisionModel(cfg))
    names = "\n".join(adapters.supported_families())
    for family in ("open_clip", "SiglipModel", "CLIPModel", "TimmModel"):
        assert family in names


def test_relevance_gaps_of_the_pooling():
    """A pooling attention with query/key norms has no LRP rule (named)."""
    from timm.layers import AttentionPoolLatent

    assert adapters.get(timm_map()).relevance_gaps() == []
    assert adapters.get(open_clip_attnpool()).relevance_gaps() == []
    model = timm_map()
    model.attn_pool = AttentionPoolLatent(32, num_heads=2, qk_norm=True)
    (gap,) = adapters.get(model).relevance_gaps()
    assert "pooling attention" in gap


def test_views_own_nothing():
    """The projection and the packed input projections reach the LRP rules as
    views of the adapter, computing the model's operation, owning nothing."""
    model = open_clip_attnpool()
    a = adapters.get(model)
    (proj,) = a.head_parts().classifiers
    x = torch.randn(2, 16)
    torch.testing.assert_close(proj(x), x @ model.visual.proj, rtol=0, atol=0)
    assert list(proj.parameters()) == [] and proj.weight.shape == (16, 16)
    views = [m for m in a.head_parts().pooler if type(m).__name__ == "InProj"]
    assert len(views) == 3 and all(list(v.parameters()) == [] for v in views)
    mha = model.visual.attn_pool.attn
    k = torch.randn(2, 5, 32)
    expected = F.linear(k, mha.k_proj_weight, mha.in_proj_bias[16:32])
    torch.testing.assert_close(views[1](k), expected, rtol=0, atol=0)
    assert len(list(model.parameters())) == len(list(a.model.parameters()))
