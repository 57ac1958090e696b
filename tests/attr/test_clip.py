"""Explaining CLIP-style models (issue 14): similarity models as the one way
methods receive "a model and an output function"; LeGrad against the
``legrad-torch`` package, GenericAttention against Chefer et al.'s CLIP
notebook and Grad-ECLIP against the authors' notebook (data and scripts in
tests/attr/data/); LeGrad, Grad-ECLIP and the pooling row of attention-pooled
models against naive formulas; AttnLRP conserving through the projection and
the embedding normalisation; every method on the CLIP families."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, KernelShap
from safetensors.torch import load_file

import captum_vit as cv
from captum_vit import adapters
from captum_vit.adapters import TokenizerMismatchError
from captum_vit.zoo._build import unpack_token_embedding
from tests import naive
from tests.attr.test_concurrency import run_threads
from tests.attr.test_contract import METHODS, Boom, _raise, assert_same_state, snapshot
from tests.clip_models import (
    CONTEXT,
    PROMPTS,
    hf_clip,
    hf_siglip,
    hf_siglip2,
    open_clip_attnpool,
    open_clip_model,
    timm_map,
)
from tests.models import images, timm_vit
from tests.tolerance import rel_err

DATA = Path(__file__).resolve().parent / "data"


def _tokenizer():
    import open_clip

    return open_clip.SimpleTokenizer(context_length=CONTEXT)


def _open_clip(cfg, path, quick_gelu=False):
    import open_clip

    model = open_clip.CLIP(
        cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=quick_gelu
    )
    state = unpack_token_embedding(load_file(path), cfg["text_cfg"]["vocab_size"])
    model.load_state_dict(state, strict=True)
    return model.eval()


# --------------------------------------------------------------- legrad-torch
@pytest.fixture(scope="module")
def legrad_reference():
    d = DATA / "legrad"
    meta = json.loads((d / "reference.json").read_text())
    ref = load_file(d / "reference.safetensors")
    models = {
        name: _open_clip(cfg, d / f"{name}_tiny.safetensors").double()
        for name, cfg in meta["configs"].items()
    }
    return meta, ref, models


@pytest.mark.parametrize("start_layer", [-2, 0])
def test_legrad_equals_legrad_torch_class_token(legrad_reference, start_layer):
    """legrad-torch's CLIP branch (mean of all tokens through ln_post and the
    projection, normalised, cosine with the prompt): every prompt and image,
    float64, to 1e-12 (the maps are in [0, 1]). The logit scale changes
    nothing (min-max)."""
    meta, ref, models = legrad_reference
    model = models["clip"]
    x = ref["images"].double()
    expected = ref[f"clip/layer_index_{start_layer}/maps"]
    for score in ("cosine", "logits"):
        sim = cv.text_similarity(model, meta["prompts"], _tokenizer(), score=score)
        torch.testing.assert_close(
            sim.references, ref["clip/text_embeddings"] * 0 + sim.references
        )
        legrad = cv.LeGrad(sim, start_layer=start_layer)
        got = torch.stack([legrad.attribute(x, target=p)[:, 0] for p in range(3)], 1)
        assert (got - expected).abs().max() < 1e-12, score
    # the embedded prompts are the reference's
    tower = adapters.get(model).text_tower()
    emb = F.normalize(tower.encode(meta["prompts"], _tokenizer()), dim=-1)
    torch.testing.assert_close(emb, ref["clip/text_embeddings"], rtol=0, atol=1e-15)


@pytest.mark.parametrize("start_layer", [-2, 0])
def test_legrad_equals_legrad_torch_attentional_pooler(legrad_reference, start_layer):
    """legrad-torch's CoCa branch (the pooler re-applied to every layer, the
    gradient at its attention, first query, no ln_post, no normalisation):
    per prompt, and for the sum of the prompts (one score, the summed
    embeddings as one reference)."""
    meta, ref, models = legrad_reference
    model = models["attnpool"]
    x = ref["images"].double()
    text = ref["attnpool/text_embeddings"]
    sim = cv.embedding_similarity(model, text, score="dot")
    legrad = cv.LeGrad(sim, start_layer=start_layer, final_norm=False)
    got = torch.stack([legrad.attribute(x, target=p)[:, 0] for p in range(3)], 1)
    key = f"attnpool/layer_index_{start_layer}"
    assert (got - ref[f"{key}/maps"]).abs().max() < 1e-12
    summed = cv.embedding_similarity(model, text.sum(0, keepdim=True), score="dot")
    legrad = cv.LeGrad(summed, start_layer=start_layer, final_norm=False)
    got = legrad.attribute(x, target=0)[:, :1]
    assert (got - ref[f"{key}/maps_prompt_sum"]).abs().max() < 1e-12
    # with ln_post (the model's own head) the map differs
    own = cv.LeGrad(sim, start_layer=start_layer).attribute(x, target=0)[:, 0]
    assert (own - ref[f"{key}/maps"][:, 0]).abs().max() > 1e-3


# ----------------------------------------------- Chefer et al., Grad-ECLIP
@pytest.fixture(scope="module")
def clip_reference():
    d = DATA / "clip_reference"
    meta = json.loads((d / "reference.json").read_text())
    ref = load_file(d / "reference.safetensors")
    models = {}
    for name, c in meta["models"].items():
        heads = c.get("vision_heads", c["vision_width"] // 64)
        cfg = {
            "embed_dim": c["embed_dim"],
            "vision_cfg": dict(
                image_size=c["image_resolution"],
                patch_size=c["vision_patch_size"],
                width=c["vision_width"],
                layers=c["vision_layers"],
                head_width=c["vision_width"] // heads,
                mlp_ratio=4.0,
            ),
            "text_cfg": dict(
                context_length=c["context_length"],
                vocab_size=c["vocab_size"],
                width=c["transformer_width"],
                heads=c["transformer_heads"],
                layers=c["transformer_layers"],
            ),
        }
        models[name] = _open_clip(cfg, d / f"{name}_tiny.safetensors", True)
    return meta, ref, models


@pytest.mark.parametrize("start_layer", [-1, 0])
def test_generic_attention_is_chefers_clip_protocol(clip_reference, start_layer):
    """Chefer et al.'s CLIP notebook (``interpret``: the image-text logit,
    R = R + mean_h((dA * A)^+) R from ``start_layer``, the class-token row) on
    their modified OpenAI CLIP equals ``GenericAttention`` of the
    ``text_similarity`` (logits) on the same weights in open_clip: float32,
    relative to the map's scale (8e-7 measured)."""
    meta, ref, models = clip_reference
    sim = cv.text_similarity(models["chefer"], meta["prompts"], _tokenizer())
    x = ref["images"]
    torch.testing.assert_close(
        sim(x), ref["chefer/logits_per_image"], rtol=1e-5, atol=1e-4
    )
    method = cv.GenericAttention(sim, start_layer=start_layer)
    got = torch.stack(
        [method.attribute(x, target=p, output="tokens").flatten(1) for p in range(3)],
        1,
    )
    expected = ref[f"chefer/start_layer_{start_layer}"]
    assert rel_err(got, expected).max() < 1e-4
    # images x prompts in one batch: image i for prompt p
    batch = x.repeat_interleave(3, 0)
    target = torch.arange(3).repeat(2)
    both = method.attribute(batch, target=target, output="tokens").flatten(1)
    assert rel_err(both, expected.reshape(6, 16)).max() < 1e-4


def test_grad_eclip_is_the_authors(clip_reference):
    """The authors' notebook (one-head last attention, the gradient at the
    class token's attention output, min-max cosine of q_cls and k_j, the
    values) equals ``GradECLIP`` on a tiny CLIP whose last layer has one head
    (float32, 1e-6 measured)."""
    meta, ref, models = clip_reference
    sim = cv.text_similarity(
        models["grad_eclip"], meta["prompts"], _tokenizer(), score="cosine"
    )
    x = ref["images"]
    torch.testing.assert_close(sim(x)[0], ref["grad_eclip/cosine_0"], atol=1e-6, rtol=0)
    got = torch.stack(
        [cv.GradECLIP(sim).attribute(x, target=p, output="tokens") for p in range(3)],
        1,
    )
    assert rel_err(got, ref["grad_eclip/maps"]).max() < 1e-4


# ------------------------------------------------------------ naive formulas
def _min_max(t):
    t = t.flatten(1)
    lo, hi = t.min(1, keepdim=True).values, t.max(1, keepdim=True).values
    return (t - lo) / (hi - lo)


@pytest.mark.parametrize("pooling", ["mean", "model"])
@pytest.mark.parametrize("start", [0, -1])
def test_legrad_on_a_classifier_is_its_formula(pooling, start):
    """LeGrad on a timm classifier: each layer's tokens through the final
    norm and the head (their mean, or the class token), the gradient of the
    target logit at the layer's attention, ReLU, mean over heads and queries,
    summed over layers, min-max (naive forward, float64)."""
    model = timm_vit().double()
    x = images(2).double()
    target = [1, 4]
    expected = []
    for i in range(2):
        tokens = []
        _, attns = naive.forward(model, x[i : i + 1], tokens=tokens)
        total = 0
        for layer in range(len(attns))[start:]:
            z = tokens[layer]
            pooled = z.mean(1) if pooling == "mean" else z[:, 0]
            logit = model.head(model.norm(pooled))[0, target[i]]
            (g,) = torch.autograd.grad(logit, attns[layer], retain_graph=True)
            total = total + g.clamp(min=0).mean((1, 2))[:, 1:]
        expected.append(_min_max(total)[0])
    got = cv.LeGrad(model, start_layer=start, pooling=pooling).attribute(
        x, target=target, output="tokens"
    )
    torch.testing.assert_close(got.flatten(1), torch.stack(expected), rtol=0, atol=1e-12)
    assert cv.LeGrad(model).attribute(x, target=target).amax() == 1.0


def test_grad_eclip_on_a_classifier_is_its_formula():
    """Grad-ECLIP on a two-head timm classifier: the gradient of the target
    logit at the last attention's class-token output, per-head min-max
    cosine of q_cls and k_j, the values (naive recomputation of the last
    block)."""
    model = timm_vit().double()
    x = images(2).double()
    target = torch.tensor([2, 0])
    tokens = []
    naive.forward(model, x, tokens=tokens)
    blk = model.blocks[-1]
    h = tokens[-2].detach()
    B, N, D = h.shape
    H, d = blk.attn.num_heads, D // blk.attn.num_heads
    qkv = blk.attn.qkv(blk.norm1(h)).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv
    o = ((q @ k.transpose(-1, -2)) * d**-0.5).softmax(-1) @ v
    o = o.detach().requires_grad_(True)
    z = h + blk.attn.proj(o.transpose(1, 2).reshape(B, N, D))
    z = z + blk.mlp(blk.norm2(z))
    logits = model.head(model.norm(z)[:, 0])
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), o)
    cos = F.cosine_similarity(q[:, :, :1], k[:, :, 1:], dim=-1)  # (B, H, P)
    lo, hi = cos.amin(-1, keepdim=True), cos.amax(-1, keepdim=True)
    lam = (cos - lo) / (hi - lo)
    expected = (g[:, :, :1] * v[:, :, 1:] * lam[..., None]).sum((1, 3)).clamp(min=0)
    got = cv.GradECLIP(model).attribute(x, target=target, output="tokens")
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-10, atol=1e-12)
    plain = cv.GradECLIP(model, spatial=False).attribute(x, target=target)
    assert not torch.allclose(plain, cv.GradECLIP(model).attribute(x, target=target))


def _siglip_by_hand(model, x):
    """The SigLIP vision tower written out from its modules: the attention of
    every block, the pooling head's probe attention per head (all in the
    graph) and the image embedding."""
    vm = model.vision_model
    emb = vm.embeddings
    h = emb.patch_embedding(x).flatten(2).transpose(1, 2)
    h = h + emb.position_embedding.weight
    B, N, D = h.shape

    def heads(t, H):
        return t.reshape(B, -1, H, t.shape[-1] // H).transpose(1, 2)

    attns = []
    for blk in vm.encoder.layers:
        at, y = blk.self_attn, blk.layer_norm1(h)
        H = at.num_heads
        q, k, v = (heads(f(y), H) for f in (at.q_proj, at.k_proj, at.v_proj))
        a = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
        attns.append(a)
        h = h + at.out_proj((a @ v).transpose(1, 2).reshape(B, N, D))
        h = h + blk.mlp(blk.layer_norm2(h))
    t = vm.post_layernorm(h)
    head = vm.head
    mha = head.attention
    E, H = mha.embed_dim, mha.num_heads
    W, b = mha.in_proj_weight, mha.in_proj_bias
    q = heads(F.linear(head.probe.expand(B, -1, -1), W[:E], b[:E]), H)
    k = heads(F.linear(t, W[E : 2 * E], b[E : 2 * E]), H)
    v = heads(F.linear(t, W[2 * E :], b[2 * E :]), H)
    p = (q @ k.transpose(-1, -2) * (E // H) ** -0.5).softmax(-1)
    o = mha.out_proj((p @ v).transpose(1, 2).reshape(B, 1, E))
    o = o + head.mlp(head.layernorm(o))
    return attns, p, q, k, v, o[:, 0]


def test_attention_methods_read_the_pooling_row_on_siglip():
    """On SigLIP (no class token) rollout, raw attention, Grad-SAM and
    GenericAttention read the pooling row (the probe's attention, head mean)
    in place of the class-token row: the formulas over the attention of the
    tower written out from its modules (float64)."""
    model = hf_siglip().double()
    x = images(2).double()
    attns, p, _, _, _, pooled = _siglip_by_hand(model, x)
    torch.testing.assert_close(
        pooled, model.get_image_features(pixel_values=x).pooler_output
    )
    row = p.detach().mean(1)[:, 0]  # (B, 16)
    eye = torch.eye(16, dtype=torch.float64)
    joint = None
    for a in attns:
        m = (a.detach().mean(1) + eye) / 2
        joint = m if joint is None else m @ joint
    expected = torch.einsum("bn,bnm->bm", row, joint)
    got = cv.AttentionRollout(model).attribute(x, output="tokens").flatten(1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    raw = torch.einsum("bn,bnm->bm", row, attns[-1].detach().mean(1))
    got = cv.RawAttention(model).attribute(x, output="tokens").flatten(1)
    torch.testing.assert_close(got, raw, rtol=1e-10, atol=1e-12)
    # gradient methods: the derivative of one embedding dimension per image
    target = torch.tensor([3, 7])
    grads = torch.autograd.grad(pooled.gather(1, target[:, None]).sum(), attns)
    sam = sum((g.clamp(min=0) * a.detach()).mean(1) for g, a in zip(grads, attns))
    expected = torch.einsum("bn,bnm->bm", row, sam / len(grads))
    got = cv.GradSAM(model).attribute(x, target=target, output="tokens").flatten(1)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-12)
    R = eye.expand(2, 16, 16)
    for g, a in zip(grads, attns):
        R = R + (g * a.detach()).clamp(min=0).mean(1) @ R
    expected = torch.einsum("bn,bnm->bm", row, R)
    got = cv.GenericAttention(model).attribute(x, target=target, output="tokens")
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-8, atol=1e-12)


def test_grad_eclip_and_legrad_on_siglip_pooling_are_their_formulas():
    """On SigLIP, Grad-ECLIP reads the pooling probe: the gradient of the
    image-text logit at the probe's attention output, per-head min-max cosine
    of the probe query and the keys, the values; LeGrad's last layer is the
    rectified gradient at the probe's attention, head mean."""
    model = hf_siglip().double()
    x = images(2).double()
    text = torch.randn(2, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sim = cv.embedding_similarity(model, text)
    head = model.vision_model.head
    _, p, q, k, v, _ = _siglip_by_hand(model, x)
    p, q, k, v = p.detach(), q.detach(), k.detach(), v.detach()
    o = (p @ v).requires_grad_(True)  # (B, H, 1, d)
    h = head.attention.out_proj(o.transpose(1, 2).reshape(2, 1, 32))
    h = h + head.mlp(head.layernorm(h))
    score = F.normalize(h[:, 0], dim=-1) @ F.normalize(text, dim=-1).T  # (B, 2)
    target = torch.tensor([1, 0])
    (g,) = torch.autograd.grad(score.gather(1, target[:, None]).sum(), o)
    cos = F.cosine_similarity(q, k, dim=-1)  # (B, H, 16)
    lam = (cos - cos.amin(-1, keepdim=True)) / (
        cos.amax(-1, keepdim=True) - cos.amin(-1, keepdim=True)
    )
    expected = (g * v * lam[..., None]).sum((1, 3)).clamp(min=0)
    got = cv.GradECLIP(sim).attribute(x, target=target, output="tokens").flatten(1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # LeGrad on the last layer only: the pooling attention's gradient
    p = p.requires_grad_(True)
    h = head.attention.out_proj((p @ v).transpose(1, 2).reshape(2, 1, 32))
    h = h + head.mlp(head.layernorm(h))
    score = F.normalize(h[:, 0], dim=-1) @ F.normalize(text, dim=-1).T
    (g,) = torch.autograd.grad(score.gather(1, target[:, None]).sum(), p)
    expected = _min_max(g.clamp(min=0).mean((1, 2)))
    got = cv.LeGrad(sim, start_layer=-1).attribute(x, target=target, output="tokens")
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------ similarity models
def test_text_similarity_is_the_models_logits():
    """``text_similarity`` gives each model's own image-text logits
    (open_clip's logit scale; SigLIP's scale and bias), and the cosine."""
    import open_clip

    model = open_clip_model().double()
    x = images(2).double()
    tokens = open_clip.SimpleTokenizer(context_length=CONTEXT)(PROMPTS)
    img, txt, scale = model(x, tokens)
    sim = cv.text_similarity(model, PROMPTS)
    torch.testing.assert_close(sim(x), scale * img @ txt.T, rtol=1e-12, atol=1e-12)
    cos = cv.text_similarity(model, PROMPTS, score="cosine")
    torch.testing.assert_close(cos(x), img @ txt.T, rtol=1e-12, atol=1e-12)
    assert sim.names == PROMPTS and sim.num_classes == 3
    model = hf_siglip().double()
    ids = torch.randint(1, 98, (3, CONTEXT), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, pixel_values=x)
    sim = cv.text_similarity(model, PROMPTS, tokenizer=lambda t: ids)
    torch.testing.assert_close(sim(x), out.logits_per_image, rtol=1e-12, atol=1e-12)
    model = hf_clip().double()
    out = model(input_ids=ids, pixel_values=x)
    sim = cv.text_similarity(model, PROMPTS, tokenizer=lambda t: ids)
    torch.testing.assert_close(sim(x), out.logits_per_image, rtol=1e-12, atol=1e-12)


def test_prompts_are_encoded_once():
    """The prompts are embedded when the similarity model is made, never
    again: explaining batches, targets and methods calls no text tower."""
    model = open_clip_model()
    calls = []
    original = model.encode_text
    model.encode_text = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        sim = cv.text_similarity(model, PROMPTS)
        assert len(calls) == 1
        x = images(4)
        for method in (cv.LeGrad(sim), cv.GenericAttention(sim), cv.AttnLRP(sim)):
            method.attribute(x, target=[0, 1, 2, 0])
        IntegratedGradients(sim).attribute(x, target=1, n_steps=4)
        assert len(calls) == 1
    finally:
        del model.encode_text


def test_bad_input_gets_clear_errors():
    model = open_clip_model()
    with pytest.raises(ValueError, match="at least one prompt"):
        cv.text_similarity(model, [])
    with pytest.raises(ValueError, match="must be strings"):
        cv.text_similarity(model, ["a red disk", 3])
    with pytest.raises(TokenizerMismatchError, match="tokens per prompt"):
        cv.text_similarity(model, PROMPTS, _tokenizer_of(16))
    with pytest.raises(TokenizerMismatchError, match="vocabulary of 100"):
        cv.text_similarity(hf_clip(), PROMPTS, _tokenizer())
    for no_text in (timm_vit(), model.visual, timm_map()):
        with pytest.raises(ValueError, match="no text tower"):
            cv.text_similarity(no_text, PROMPTS)
    with pytest.raises(ValueError, match="score must be one of"):
        cv.text_similarity(model, PROMPTS, score="softmax")
    sim = cv.text_similarity(model, PROMPTS)
    with pytest.raises(ValueError, match="out of range for 3 prompts"):
        cv.LeGrad(sim).attribute(images(2), target=3)
    with pytest.raises(TypeError, match="not a similarity model"):
        cv.text_similarity(sim, PROMPTS)
    with pytest.raises(ValueError, match="16-dimensional"):
        cv.embedding_similarity(model, torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"\(K, D\)"):
        cv.embedding_similarity(model, torch.randn(0, 16))
    with pytest.raises(ValueError, match="at least one reference"):
        cv.image_similarity(model, images(0))
    with pytest.raises(ValueError, match="constant for a model with one output"):
        cv.ATMAN(cv.text_similarity(model, PROMPTS[:1]))


def _tokenizer_of(context):
    import open_clip

    return open_clip.SimpleTokenizer(context_length=context)


def test_image_similarity():
    """Image-image similarity: the cosine of the embeddings, the reference
    embedded once; a classifier built without head is an embedding model."""
    backbone = timm_vit(num_classes=0).double()
    x, refs = images(3).double(), images(2, seed=7).double()
    sim = cv.image_similarity(backbone, refs)
    expected = F.normalize(backbone(x), dim=-1) @ F.normalize(backbone(refs), dim=-1).T
    torch.testing.assert_close(sim(x), expected, rtol=1e-12, atol=1e-12)
    maps = cv.GenericAttention(sim).attribute(x, target=[0, 1, 1], output="tokens")
    assert maps.shape == (3, 4, 4) and torch.isfinite(maps).all()
    # the map of an image for itself as reference is not that for another one
    self_sim = cv.image_similarity(backbone, x[:1])
    a = cv.GradSAM(self_sim).attribute(x[:1], target=0)
    b = cv.GradSAM(sim).attribute(x[:1], target=0)
    assert not torch.allclose(a, b)


def test_captum_methods_take_the_similarity_unchanged():
    """Integrated Gradients (completeness) and KernelShap with the patch
    mask run on the similarity model as on any forward function."""
    model = open_clip_model().double()
    sim = cv.text_similarity(model, PROMPTS)
    x = images(2).double()
    ig = IntegratedGradients(sim)
    attr, delta = ig.attribute(
        x, target=[1, 2], n_steps=64, return_convergence_delta=True
    )
    assert attr.shape == x.shape
    assert delta.abs().max() < 1e-2 * sim(x).abs().max()
    mask = cv.patch_feature_mask(sim, x)
    ks = KernelShap(sim).attribute(
        x[:1], target=0, feature_mask=mask, n_samples=64, baselines=0.0
    )
    tokens = cv.to_tokens(ks, sim, reduce="mean")
    assert tokens.shape == (1, 4, 4) and tokens.abs().sum() > 0


# ------------------------------------------------------------------ AttnLRP
def test_attn_lrp_conserves_through_the_projection_and_normalisation():
    """With zero biases, AttnLRP's relevance of the pixels, the positional
    embedding and the class embedding plus what the softmax rules absorb is
    the cosine score: the embedding normalisation (identity rule, its norm
    held constant), the projection, ln_post and ln_pre all get rules."""
    from captum_vit.attr._lrp import AttnLRPRules, lrp_context

    model = open_clip_model().double()
    with torch.no_grad():
        for name, p in model.visual.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    text = torch.randn(3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sim = cv.embedding_similarity(model, text)
    v = model.visual
    x = images(1).double()
    with torch.enable_grad(), lrp_context(sim, AttnLRPRules(1e-12)) as tr:
        tr.keep_scores = True
        xr = x.clone().requires_grad_(True)
        out = sim(xr)
        L = sim.num_layers
        attn = [tr.attentions[i] for i in range(L)]
        scores = [tr.scores[i] for i in range(L)]
        start = torch.zeros_like(out)
        start[0, 1] = out[0, 1].detach()
        wrt = [xr, v.positional_embedding, v.class_embedding] + attn + scores
        g = torch.autograd.grad(out, wrt, grad_outputs=start)
    inputs = sum(t.sum() for t in g[:3])
    absorbed = sum(ga.sum() - gs.sum() for ga, gs in zip(g[3 : 3 + L], g[3 + L :]))
    score = out[0, 1].item()
    assert abs(inputs.item() + absorbed.item() - score) < 1e-8 * abs(score)
    rel = cv.AttnLRP(sim, epsilon=1e-12).attribute(x, target=1)
    assert abs(rel.sum().item() - g[0].sum().item()) < 1e-10


def test_lrp_rules_reach_every_head_module():
    """The LRP engine gives a rule to ln_pre, the projection, the embedding
    normalisation, the similarity and the attention pooler's modules."""
    from captum_vit.attr._lrp import AttnLRPRules, _module_rules

    for model in (open_clip_attnpool(), hf_siglip()):
        sim = cv.embedding_similarity(model, torch.randn(2, sim_width(model)))
        bound = {id(m) for m, _ in _module_rules(sim, AttnLRPRules())}
        head = sim.head_parts()
        wanted = list(head.pooler) + list(head.pre_logits) + list(head.classifiers)
        post = sim.embedding_parts().post_norm
        wanted += [post] if post is not None else []
        wanted = [m for m in wanted if not isinstance(m, torch.nn.Identity)]
        assert wanted and all(id(m) in bound for m in wanted)
        names = {type(m).__name__ for m in wanted}
        assert {"L2Normalize", "FixedLinear", "InProj"} <= names


def sim_width(model):
    return adapters.get(model).num_classes


# ---------------------------------------------------- every method, families
CLIP_FAMILIES = {
    "open_clip_token": lambda: cv.text_similarity(open_clip_model(), PROMPTS),
    "open_clip_attnpool": lambda: cv.text_similarity(open_clip_attnpool(), PROMPTS),
    "hf_siglip": lambda: cv.text_similarity(
        hf_siglip(), PROMPTS, tokenizer=lambda t: torch.ones(len(t), 8, dtype=torch.long)
    ),
    "hf_siglip2": lambda: cv.embedding_similarity(hf_siglip2(), torch.randn(3, 32)),
    "timm_map": timm_map,
    "timm_map_class_token": lambda: timm_map(class_token=True),
}
_SIMS = {}


def _sim(family):
    if family not in _SIMS:
        _SIMS[family] = CLIP_FAMILIES[family]()
    return _SIMS[family]


def _refusal(name, family, model):
    """The documented refusals on these families (docs/clip.rst)."""
    a = adapters.get(model)
    lrp = {"transformer_lrp", "partial_lrp", "lrp", "lrp_original", "attn_lrp"}
    if name in lrp and a.relevance_gaps():
        return NotImplementedError, "no rule for"
    if name == "vit_shapley_untrained":
        return NotImplementedError, "ViT Shapley"
    if name == "evit" and not a.has_class_token:
        return ValueError, "class-token attention"
    return None


def _module(model):
    return adapters.get(model).model


@pytest.mark.parametrize("family", list(CLIP_FAMILIES))
@pytest.mark.parametrize("name,factory,tol", METHODS, ids=[m[0] for m in METHODS])
def test_every_method_on_the_clip_families(family, name, factory, tol):
    """Finite maps of the right shape, batch independent, the model left as
    it was after success and after a raise in a block and in the pooling
    head; or the documented refusal, before any change."""
    model = _sim(family)
    x = images(3)
    target = torch.tensor([0, 2, 1])
    refusal = _refusal(name, family, model)
    before = snapshot(_module(model))
    if refusal is not None:
        with pytest.raises(refusal[0], match=refusal[1]):
            factory(model).attribute(x, target=target)
        assert_same_state(before, snapshot(_module(model)))
        return
    method = factory(model)
    tokens = method.attribute(x, target=target, output="tokens")
    assert tokens.shape == (3, 4, 4) and torch.isfinite(tokens).all()
    pixels = method.attribute(x, target=target)
    assert pixels.shape == x.shape and torch.isfinite(pixels).all()
    assert_same_state(before, snapshot(_module(model)))
    single = method.attribute(x[1:2], target=2, output="tokens")
    assert rel_err(single, tokens[1:2]).max() < max(tol, 1e-4)
    a = adapters.get(model)
    head = a.head_parts()
    raising = [a.block_parts(1).mlp[0]] + ([head.pooler[-1]] if head.pooler else [])
    for module in raising:
        handle = module.register_forward_pre_hook(_raise)
        try:
            before = snapshot(_module(model))
            with pytest.raises(Boom):
                method.attribute(x, target=target)
            assert_same_state(before, snapshot(_module(model)))
        finally:
            handle.remove()


def test_threads_explain_one_clip_model():
    """Threads explaining one similarity model (LeGrad, GenericAttention,
    Grad-ECLIP, AttnLRP, rollout) get the sequential maps while another
    thread runs the plain similarity, which never sees a traced forward."""
    model = open_clip_attnpool().double()
    sim = cv.text_similarity(model, PROMPTS)
    x = images(3).double()
    target = torch.tensor([0, 2, 1])
    factories = {
        "legrad": cv.LeGrad,
        "generic_attention": cv.GenericAttention,
        "grad_eclip": cv.GradECLIP,
        "attn_lrp": cv.AttnLRP,
        "rollout": cv.AttentionRollout,
    }
    expected = {n: f(sim).attribute(x, target=target) for n, f in factories.items()}
    with torch.no_grad():
        plain = sim(x)
    before = snapshot(model)

    def forward_job():
        for _ in range(10):
            with torch.no_grad():
                assert torch.equal(sim(x), plain)

    def job(name):
        def run():
            for _ in range(2):
                got = factories[name](sim).attribute(x, target=target)
                assert rel_err(got, expected[name]).max() < 1e-12, name

        return run

    errors = run_threads([forward_job] + [job(n) for n in factories])
    assert not errors, errors
    assert threading.active_count() >= 1
    assert_same_state(before, snapshot(model))
