"""The BEiT, EVA and DINOv2 adapters: the traced forward is the model's own
function (float32 and float64, every attention implementation), the
description (prefix tokens, pooling row, grid), the relative position bias in
the recorded scores, the relevance gaps and the model left untouched."""

from __future__ import annotations

import pytest
import torch

from captum_vit import adapters
from captum_vit.adapters import Tracer
from tests import naive
from tests.models import (
    EVA02,
    SWIN_FAMILIES,
    hf_beit_from_timm,
    hf_dinov2_from_timm,
    images,
    timm_beit,
    timm_cait,
    timm_dinov2,
    timm_eva,
)


class EndsTracer(Tracer):
    """Routes the positional sum and the pooling too (as the LRP engine)."""

    trace_ends = True


def _timm_beit_separate_bias():
    model = timm_beit()
    for blk in model.blocks:
        blk.attn.qkv_bias_separate = True
    return model


def _unfused(model):
    for blk in model.blocks:
        blk.attn.fused_attn = False
    return model


# name -> (factory, image size); HF models in both attention implementations
FAMILIES = {
    "timm_beit": (timm_beit, 32),
    "timm_beit_unfused": (lambda: _unfused(timm_beit()), 32),
    "timm_beit_shared_token": (
        lambda: timm_beit(
            use_shared_rel_pos_bias=True, use_abs_pos_emb=False, global_pool="token"
        ),
        32,
    ),
    "timm_beit_shared_only_no_scale": (
        lambda: timm_beit(
            use_rel_pos_bias=False, use_shared_rel_pos_bias=True, init_values=None
        ),
        32,
    ),
    "timm_beit_separate_bias": (_timm_beit_separate_bias, 32),
    "timm_beit_swiglu": (lambda: timm_beit(swiglu_mlp=True, scale_mlp=True), 32),
    "timm_eva01": (timm_eva, 32),
    "timm_eva02": (lambda: timm_eva(**EVA02), 32),
    "timm_eva02_unfused": (lambda: _unfused(timm_eva(**EVA02)), 32),
    "timm_eva_registers_token_rope_separate_qkv": (
        lambda: timm_eva(
            num_reg_tokens=2,
            no_embed_class=True,
            global_pool="token",
            qkv_fused=False,
            use_rot_pos_emb=True,
            init_values=0.2,
            attn_only_layer_scale=True,
        ),
        32,
    ),
    "timm_eva_dynamic_48x40": (
        lambda: timm_eva(dynamic_img_size=True, **EVA02),
        (48, 40),
    ),
    "timm_eva_no_class_token_qk_norm": (
        lambda: timm_eva(class_token=False, qk_norm=True, scale_attn_inner=True),
        32,
    ),
    "timm_eva02_packed_swiglu_pre_norm": (
        lambda: timm_eva(
            use_rot_pos_emb=True, swiglu_mlp=True, use_pre_transformer_norm=True
        ),
        32,
    ),
    "hf_beit_sdpa": (lambda: hf_beit_from_timm(timm_beit(), "sdpa"), 32),
    "hf_beit_eager": (lambda: hf_beit_from_timm(timm_beit(), "eager"), 32),
    "hf_beit_shared_token_eager": (
        lambda: hf_beit_from_timm(
            timm_beit(use_shared_rel_pos_bias=True, global_pool="token"), "eager"
        ),
        32,
    ),
    "hf_beit_sdpa_48": (lambda: hf_beit_from_timm(timm_beit(), "sdpa"), 48),
    "hf_dinov2_sdpa": (
        lambda: hf_dinov2_from_timm(timm_dinov2(registers=0), "sdpa", mean_head=True),
        32,
    ),
    "hf_dinov2_registers_eager": (
        lambda: hf_dinov2_from_timm(timm_dinov2(), "eager", mean_head=True),
        32,
    ),
    "hf_dinov2_registers_sdpa_48x40": (
        lambda: hf_dinov2_from_timm(timm_dinov2(), "sdpa", mean_head=True),
        (48, 40),
    ),
    "hf_dinov2_swiglu_sdpa": (
        lambda: hf_dinov2_from_timm(timm_dinov2(swiglu=True), "sdpa", mean_head=True),
        32,
    ),
    "timm_dinov2_registers": (timm_dinov2, 32),
    "timm_dinov2_swiglu": (lambda: timm_dinov2(swiglu=True), 32),
}


def _logits(model, x):
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_traced_forward_is_the_models(name, dtype, tol):
    """The explicit forward (blocks and attention routed through a tracer,
    with and without the ends) computes the model's own logits."""
    factory, size = FAMILIES[name]
    model = factory().to(dtype)
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 3, h, w, generator=g).to(dtype)
    a = adapters.get(model)
    expected = _logits(model, x)
    if dtype == torch.float64 and "beit_eager" in name.replace("_shared_token", ""):
        # Hugging Face BEiT's eager attention takes its softmax in float32
        # even for float64 inputs; the explicit forward keeps float64, as the
        # model's sdpa path does: compare with that path
        assert _rel(_logits(model, x), expected) < 1e-6
        model.set_attn_implementation("sdpa")
        expected = _logits(model, x)
        model.set_attn_implementation("eager")
    for tracer in (Tracer(keep_scores=True), EndsTracer(), Tracer(layers=[1])):
        with a.trace(tracer):
            got = a.forward(x)
        assert got.dtype == dtype
        assert _rel(got, expected) < tol, type(tracer).__name__
        for blk in a.blocks():
            assert "forward" not in blk.__dict__
    assert sorted(tracer.attentions) == [1]  # the last: only layer 1 explicit
    gh, gw = a.grid_size((h, w))
    N = a.num_prefix_tokens + gh * gw
    assert tracer.attentions[1].shape == (3, a.num_heads, N, N)


def test_descriptions():
    beit = adapters.get(timm_beit())
    assert type(beit).__name__ == "TimmBeitAdapter"
    assert beit.num_prefix_tokens == 1 and beit.pooling == "avg"
    assert beit.has_class_token and beit.grid_size((32, 32)) == (4, 4)
    torch.testing.assert_close(
        beit.pool_weights(17), torch.tensor([0.0] + [1 / 16] * 16)
    )
    assert adapters.get(timm_beit(global_pool="token")).pooling == "token"
    eva = adapters.get(timm_eva(num_reg_tokens=3, class_token=False))
    assert type(eva).__name__ == "TimmEvaAdapter"
    assert eva.num_prefix_tokens == 3 and not eva.has_class_token
    assert eva.pooling == "avg" and eva.pool_weights(19)[:3].sum() == 0
    hf = adapters.get(hf_beit_from_timm(timm_beit()))
    assert type(hf).__name__ == "HFBeitAdapter" and hf.pooling == "avg"
    assert hf.head_parts().fc_norm is not None and hf.head_parts().norm is None
    assert len(hf.block_parts(0).scales) == 2


def test_dinov2_pooling_row_excludes_registers():
    """Hugging Face DINOv2's head reads the class token and the mean of the
    patch tokens (not of the registers, transformers#37817): the pooling row
    says so, and the traced head with that pooling is the model's."""
    model = hf_dinov2_from_timm(timm_dinov2(registers=3), mean_head=True)
    a = adapters.get(model)
    assert a.num_prefix_tokens == 4 and a.pooling == "token+avg"
    w = a.pool_weights(4 + 16)
    torch.testing.assert_close(w[:4], torch.tensor([0.5, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(w[4:], torch.full((16,), 0.5 / 16))
    x = images(2)
    pools = []

    class Recording(EndsTracer):
        def pool(self, x, weights):
            pools.append(weights)
            return super().pool(x, weights)

    with a.trace(Recording()):
        got = a.forward(x)
    torch.testing.assert_close(got, model(x).logits, rtol=1e-5, atol=1e-6)
    assert len(pools) == 2
    torch.testing.assert_close(pools[0] / 2 + pools[1] / 2, w)
    # by hand: the class token and the patch mean (registers left out)
    seq = model.dinov2_with_registers(x).last_hidden_state
    by_hand = model.classifier(torch.cat([seq[:, 0], seq[:, 4:].mean(1)], 1))
    torch.testing.assert_close(got, by_hand, rtol=1e-5, atol=1e-6)
    with_registers = model.classifier(torch.cat([seq[:, 0], seq[:, 1:].mean(1)], 1))
    assert not torch.allclose(got, with_registers, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("library", ["timm", "hf"])
def test_scores_carry_the_relative_position_bias(library):
    """The recorded pre-softmax scores are s q k^T plus the per-layer and
    shared biases, looked up in the tables with the paper's index."""
    base = timm_beit(use_shared_rel_pos_bias=True).double()
    model = base if library == "timm" else hf_beit_from_timm(base, "eager").double()
    x = images(2).double()
    a = adapters.get(model)
    with a.trace(Tracer(keep_scores=True, keep_blocks=True)) as tracer:
        a.forward(x)
    idx = naive.relative_position_index(4, 4)
    shared = base.rel_pos_bias.relative_position_bias_table[idx].permute(2, 0, 1)
    for layer, blk in enumerate(base.blocks):
        attn = blk.attn
        y = blk.norm1(tracer.block_inputs[layer])
        qkv = y @ attn.qkv.weight.T + torch.cat([attn.q_bias, attn.k_bias, attn.v_bias])
        q, k, _ = qkv.reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
        own = attn.relative_position_bias_table[idx].permute(2, 0, 1)
        expected = q @ k.transpose(-1, -2) * 16**-0.5 + own + shared
        torch.testing.assert_close(
            tracer.scores[layer], expected, rtol=1e-10, atol=1e-10
        )
        torch.testing.assert_close(
            tracer.attentions[layer], expected.softmax(-1), rtol=1e-10, atol=1e-12
        )


def test_score_hook_sees_the_biased_scores():
    """A -inf on the keys of token 3 masks it in every family."""
    x = images(2)

    def hook(layer, scores):
        return scores.index_fill(-1, torch.tensor([3]), float("-inf"))

    for model in (timm_beit(), timm_eva(**EVA02), hf_beit_from_timm(timm_beit())):
        a = adapters.get(model)
        with a.trace(Tracer(score_hook=hook, keep_scores=True)) as tracer:
            masked = a.forward(x)
        assert tracer.attentions[0][..., 3].abs().max() == 0
        assert torch.isinf(tracer.scores[1][..., 3]).all()
        assert not torch.allclose(masked, _logits(model, x), rtol=1e-3, atol=1e-4)


class _OwnGate(torch.nn.Module):
    """A gated MLP of a layout captum_vit does not know (the attribute names
    of timm's SwiGLU, its own forward)."""

    def __init__(self, mlp):
        super().__init__()
        self.fc1_g, self.fc1_x, self.act = mlp.fc1_g, mlp.fc1_x, mlp.act
        self.norm, self.fc2 = mlp.norm, mlp.fc2

    def forward(self, x):
        return self.fc2(self.norm(self.act(self.fc1_g(x)) * self.fc1_x(x)))


def _own_gate_eva():
    model = timm_eva(**EVA02)
    for blk in model.blocks:
        blk.mlp = _OwnGate(blk.mlp)
    return model


def test_relevance_gaps():
    """Operations without an LRP rule are named: since issue 15 the rotary
    embedding, timm's and Hugging Face's SwiGLU, the norms inside the
    attention and ``norm_pre`` have rules; a gated MLP of an unknown layout
    is still refused."""
    for model in (
        timm_beit(),
        timm_eva(),
        timm_dinov2(),
        hf_beit_from_timm(timm_beit()),
        timm_eva(**EVA02),
        timm_eva(use_rot_pos_emb=True, swiglu_mlp=True),  # GluMlp (packed)
        timm_eva(qk_norm=True, scale_attn_inner=True),
        timm_eva(use_pre_transformer_norm=True),
        timm_beit(swiglu_mlp=True),
        timm_dinov2(swiglu=True),
        hf_dinov2_from_timm(timm_dinov2(swiglu=True)),
    ):
        assert adapters.get(model).relevance_gaps() == []
    (gap,) = adapters.get(_own_gate_eva()).relevance_gaps()
    assert "gated product" in gap


def test_relevance_tracer_refused_before_any_change():
    """A tracer with a rule set (the LRP engine's) is refused on a model with
    gaps, before anything is set on the model; other tracers run."""
    model = _own_gate_eva()
    a = adapters.get(model)

    class WithRules(Tracer):
        rules = object()

    with pytest.raises(NotImplementedError, match="no rule for the gated product"):
        with a.trace(WithRules()):
            pass
    assert not any("forward" in m.__dict__ for m in model.modules())
    with a.trace(EndsTracer()):
        a.forward(images(1))


def test_token_dropping_is_refused_where_positions_matter():
    """A tracer that shortens the sequence (EViT) cannot be followed by the
    relative position bias or the rotary embedding: a clear error."""

    class Dropping(Tracer):
        def residual(self, layer, index, x, branch):
            out = x + branch
            return out[:, :-3] if (layer, index) == (0, 0) else out

    for model, what in (
        (timm_beit(), "relative position bias"),
        (hf_beit_from_timm(timm_beit()), "relative position bias"),
        (timm_eva(**EVA02), "rotary position embedding"),
    ):
        a = adapters.get(model)
        with pytest.raises(NotImplementedError, match=what):
            with a.trace(Dropping()):
                a.forward(images(1))
        assert not any("forward" in m.__dict__ for m in model.modules())
    # absolute positions only: the shorter sequence runs
    a = adapters.get(timm_eva())
    with a.trace(Dropping()) as tracer:
        a.forward(images(1))
    assert tracer.attentions[1].shape[-1] == 14


def test_unsupported_variants_say_why():
    from timm.models.eva import Eva

    with pytest.raises(adapters.UnsupportedModelError, match="Supported families"):
        adapters.get(torch.nn.Linear(2, 2))
    names = "\n".join(adapters.supported_families())
    for family in ("Beit", "Eva", "BeitForImageClassification", "Dinov2"):
        assert family in names
    cases = [
        (dict(use_post_norm=True), "pre-norm EvaBlock"),
        (dict(attn_type="rope", use_rot_pos_emb=True), "pre-norm EvaBlock"),
        (dict(global_pool="map"), "attention pooling"),
        (dict(global_pool="max"), "global_pool='max'"),
    ]
    for kwargs, message in cases:
        model = Eva(
            img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, **kwargs
        )
        with pytest.raises(adapters.UnsupportedModelError, match=message):
            adapters.get(model)
    with pytest.raises(adapters.UnsupportedModelError, match="global_pool=''"):
        adapters.get(timm_beit(global_pool=""))


@pytest.mark.parametrize(
    "factory,size,message",
    [
        (timm_beit, 40, "takes 32x32 images"),
        (lambda: hf_beit_from_timm(timm_beit()), 36, "not divisible"),
        (lambda: hf_dinov2_from_timm(timm_dinov2()), 36, "not divisible"),
    ],
)
def test_image_sizes(factory, size, message):
    a = adapters.get(factory())
    with pytest.raises(ValueError, match=message):
        a.check_image_size((size, size))
    a.check_image_size((32, 32))


def test_views_are_the_adapters_not_the_models():
    """timm BEiT's separate q/v biases and bare layer-scale parameters reach
    the LRP rules as small modules of the adapter: one object per adapter and
    layer, owning no parameter, computing the model's own operation."""
    model = timm_beit()
    a = adapters.get(model)
    parts = a.block_parts(0)
    (qkv,) = parts.qkv
    assert qkv is a.block_parts(0).qkv[0]
    assert list(qkv.parameters()) == [] and qkv not in list(model.modules())
    assert qkv.weight is model.blocks[0].attn.qkv.weight
    x = torch.randn(2, 5, 32)
    attn = model.blocks[0].attn
    expected = torch.nn.functional.linear(
        x, attn.qkv.weight, torch.cat([attn.q_bias, attn.k_bias, attn.v_bias])
    )
    torch.testing.assert_close(qkv(x), expected, rtol=0, atol=0)
    scale = parts.scales[0]
    assert list(scale.parameters()) == []
    torch.testing.assert_close(scale(x), model.blocks[0].gamma_1 * x, rtol=0, atol=0)
    assert len(list(model.parameters())) == len(
        list(adapters.get(model).model.parameters())
    )


class _AttentionInputTracer(Tracer):
    """Scales the normalised tokens entering each block's attention (the
    hook ViT-ReciproCAM masks) and records the calls."""

    def __init__(self, factor: float) -> None:
        super().__init__(keep_attention=False)
        self.factor = factor
        self.calls: list = []

    def attention_input(self, layer, x):
        self.calls.append((layer, tuple(x.shape)))
        return x * self.factor


#: these families and the Swin ones (whose v2 blocks have no norm before
#: the attention: the block input itself enters it)
ATTENTION_INPUT_FAMILIES = {
    **FAMILIES,
    **{name: (factory, 32) for name, factory in SWIN_FAMILIES.items()},
    "timm_cait": (timm_cait, 32),  # class-attention blocks: norm1([cls; patches])
}


@pytest.mark.parametrize("name", list(ATTENTION_INPUT_FAMILIES))
def test_attention_input_feeds_the_attention(name):
    """Every family routes the first norm's output through
    ``Tracer.attention_input`` once per block, into the attention (a method
    that replaces it changes the logits; the identity does not)."""
    factory, size = ATTENTION_INPUT_FAMILIES[name]
    model = factory().double()
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(5)).double()
    ad = adapters.get(model)
    if "beit_eager" in name.replace("_shared_token", ""):
        model.set_attn_implementation("sdpa")  # float64 softmax (see above)
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
