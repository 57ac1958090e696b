"""Cross-cutting tests driven by ONE list of (method, options).

Every method of the package is listed in ``METHODS``; each test below runs on
all of them: output contract and shapes, model families (timm fused/unfused,
Hugging Face sdpa/eager, torchvision) agreeing on shared weights, batch
independence, model state restored after success and after an exception,
Captum's metrics and NoiseTunnel accepting the output, and bad input.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import infidelity, sensitivity_max

import captum_vit as cv
from captum_vit.adapters import UnsupportedModelError
from captum_vit.attr._base import ViTAttribution
from tests.models import (
    CLASSES,
    SWIN_FAMILIES,
    hf_vit_from_timm,
    images,
    timm_cait,
    timm_eva,
    timm_swin,
    timm_vit,
    torchvision_vit_from_timm,
)


def _vit_shapley(m):
    # untrained explainer and surrogate around the model itself (the contract
    # only); the head is seeded so that every model family gets the same one
    with torch.random.fork_rng():
        torch.manual_seed(0)
        explainer = cv.ShapleyExplainer(m)
    explainer.to(next(m.parameters()).dtype)  # its new head in the model's dtype
    return cv.ViTShapley(explainer, cv.ShapleySurrogate(m))


# (id, factory(model) -> attribution method, tolerance on max|a - b| / max|b|
# between two float32 computations of one map in a different operation order:
# other model families, batched vs single; see tests/tolerance.py)
METHODS = [
    ("raw_attention", lambda m: cv.RawAttention(m), 1e-5),
    ("raw_attention_l0_h1", lambda m: cv.RawAttention(m, layer=0, head=1), 1e-5),
    ("rollout", lambda m: cv.AttentionRollout(m), 1e-5),
    (
        "rollout_max_discard",
        lambda m: cv.AttentionRollout(m, head_fusion="max", discard_ratio=0.5),
        1e-5,
    ),
    ("grad_sam", lambda m: cv.GradSAM(m), 1e-4),
    ("grad_sam_all", lambda m: cv.GradSAM(m, query="all"), 1e-4),
    ("generic_attention", lambda m: cv.GenericAttention(m), 1e-4),
    ("generic_attention_s1", lambda m: cv.GenericAttention(m, start_layer=1), 1e-4),
    ("attention_flow", lambda m: cv.AttentionFlow(m), 1e-5),
    ("beyond_intuition_token", lambda m: cv.BeyondIntuition(m, steps=5), 1e-4),
    (
        "beyond_intuition_head",
        lambda m: cv.BeyondIntuition(m, mode="head", steps=5),
        1e-4,
    ),
    ("tam", lambda m: cv.TAM(m, steps=5), 1e-4),
    ("transformer_lrp", lambda m: cv.TransformerLRP(m), 1e-4),
    ("partial_lrp", lambda m: cv.PartialLRP(m), 1e-4),
    ("vit_shapley_untrained", _vit_shapley, 1e-4),
    ("atman", lambda m: cv.ATMAN(m, internal_batch_size=8), 1e-3),
    ("vit_gradcam", lambda m: cv.ViTGradCam(m), 1e-4),
    ("evit", lambda m: cv.EViT(m), 1e-5),
    ("vit_cx", lambda m: cv.ViTCX(m, internal_batch_size=16), 1e-4),
    ("lrp", lambda m: cv.LRP(m), 1e-4),
    ("lrp_original", lambda m: cv.LRP(m, rules="original"), 1e-4),
    ("attn_lrp", lambda m: cv.AttnLRP(m), 1e-4),
    ("vit_reciprocam", lambda m: cv.ViTReciproCAM(m, internal_batch_size=8), 1e-4),
    (
        "vit_reciprocam_l0_1x1",
        lambda m: cv.ViTReciproCAM(m, layer=0, use_gaussian=False),
        1e-4,
    ),
    ("tis", lambda m: cv.TIS(m, n_masks=16, internal_batch_size=8), 1e-4),
    ("attcat", lambda m: cv.AttCAT(m), 1e-4),
    ("attcat_class", lambda m: cv.AttCAT(m, query="class"), 1e-4),
    ("agcam", lambda m: cv.AGCAM(m), 1e-4),
    ("legrad", lambda m: cv.LeGrad(m), 1e-4),
    ("legrad_all_model_pooling", lambda m: cv.LeGrad(m, 0, pooling="model"), 1e-4),
    ("grad_eclip", lambda m: cv.GradECLIP(m), 1e-4),
]
IDS = [m[0] for m in METHODS]
TARGET = torch.tensor([0, 3, 1, 4])


@pytest.fixture(scope="module")
def model():
    return timm_vit()


@pytest.fixture(scope="module")
def x():
    return images(4)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


# ------------------------------------------------------------------ contract
@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_output_contract(name, factory, tol, model, x):
    method = factory(model)
    attr = method.attribute(x, target=TARGET)
    assert attr.shape == x.shape
    assert not attr.requires_grad
    assert torch.isfinite(attr).all()
    assert attr.dtype == x.dtype
    tokens = method.attribute(x, target=TARGET, output="tokens")
    assert tokens.shape == (4, 4, 4)
    if method._attribute_returns == "pixels":
        # a pixel-native map; "tokens" pools it within each 8x8 patch
        patches = attr.reshape(4, 3, 4, 8, 4, 8)
        pooled = {"sum": patches.sum((1, 3, 5)), "mean": patches.mean((1, 3, 5))}
        assert _rel(tokens, pooled[method._token_reduce]) < 1e-5
    else:
        assert method._attribute_returns == "tokens"
        # the pixel map is the upsampled token map, identical over channels
        assert torch.equal(attr[:, 0], attr[:, 2])
    assert method.has_convergence_delta() is False
    assert method.multiplies_by_inputs is False
    assert isinstance(method.get_name(), str)
    # target=None explains the predicted class
    pred = model(x).argmax(-1)
    torch.testing.assert_close(
        method.attribute(x), method.attribute(x, target=pred), rtol=0, atol=0
    )
    # Captum's target formats: int, list, 1-element tuple
    torch.testing.assert_close(
        method.attribute(x, target=2), method.attribute(x, target=[2, 2, 2, 2])
    )
    one = method.attribute((x,), target=TARGET)
    assert isinstance(one, tuple) and torch.equal(one[0], attr)


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_families_agree(name, factory, tol, model, x):
    expected = factory(model).attribute(x, target=TARGET, output="tokens")
    unfused = timm_vit()
    for blk in unfused.blocks:
        blk.attn.fused_attn = False
    others = {
        "timm_unfused": unfused,
        "hf_sdpa": hf_vit_from_timm(model, "sdpa"),
        "hf_eager": hf_vit_from_timm(model, "eager"),
        "torchvision": torchvision_vit_from_timm(model),
    }
    for family, other in others.items():
        got = factory(other).attribute(x, target=TARGET, output="tokens")
        assert _rel(got, expected) < tol, family


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_batch_independence(name, factory, tol, model, x):
    method = factory(model)
    batched = method.attribute(x, target=TARGET, output="tokens")
    for i in range(x.shape[0]):
        single = method.attribute(
            x[i : i + 1], target=TARGET[i : i + 1], output="tokens"
        )
        assert _rel(single[0], batched[i]) < tol, i


# ---------------------------------------------------------------- model state
def snapshot(model):
    mods = {}
    for name, mod in model.named_modules():
        hooks = tuple(
            len(getattr(mod, h))
            for h in (
                "_forward_hooks",
                "_forward_pre_hooks",
                "_backward_hooks",
                "_backward_pre_hooks",
            )
        )
        mods[name] = (
            mod.training,
            "forward" in mod.__dict__,
            hooks,
            getattr(mod, "fused_attn", None),
            sorted(k for k in mod.__dict__ if not k.startswith("_")),
        )
    params = {
        n: (
            p.requires_grad,
            p.detach().clone(),
            None if p.grad is None else p.grad.clone(),
        )
        for n, p in model.named_parameters()
    }
    return mods, params


def assert_same_state(before, after):
    mods_b, params_b = before
    mods_a, params_a = after
    assert mods_b == mods_a
    assert params_b.keys() == params_a.keys()
    for n in params_b:
        rg_b, v_b, g_b = params_b[n]
        rg_a, v_a, g_a = params_a[n]
        assert rg_b == rg_a, n
        assert torch.equal(v_b, v_a), n
        assert (g_b is None) == (g_a is None), n
        if g_b is not None:
            assert torch.equal(g_b, g_a), n


class Boom(RuntimeError):
    pass


def _raise(*_args, **_kwargs):
    raise Boom("raised in the middle of a call")


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
@pytest.mark.parametrize("family", ["timm", "hf", "torchvision", "timm_eva"])
def test_state_restored(name, factory, tol, family, x):
    base = timm_vit()
    model = {
        "timm": lambda: base,
        "hf": lambda: hf_vit_from_timm(base),
        "torchvision": lambda: torchvision_vit_from_timm(base),
        # the other families: tests/attr/test_families.py
        "timm_eva": timm_eva,
    }[family]()
    # a user state that must survive: train mode on one block, a frozen
    # parameter, a stale .grad, a user hook
    first = cv.adapters.get(model).blocks()[0]
    first.train()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.ones_like(params[-1])
    handle = model.register_forward_hook(lambda *a: None)
    method = factory(model)
    try:
        before = snapshot(model)
        method.attribute(x, target=TARGET)
        assert_same_state(before, snapshot(model))

        # a raise in the middle of the forward or of the backward/relevance
        # pass, in a block and in the head
        adapter = cv.adapters.get(model)
        for module in (
            adapter.block_parts(1).mlp[0],
            adapter.head_parts().classifiers[0],
        ):
            for where in ("forward", "backward"):
                if where == "forward":
                    h = module.register_forward_pre_hook(_raise)
                else:
                    h = module.register_full_backward_hook(_raise)
                try:
                    before = snapshot(model)
                    raised = False
                    try:
                        method.attribute(x, target=TARGET)
                    except Boom:
                        raised = True
                    assert_same_state(before, snapshot(model))
                    # a method that takes gradients runs a backward (gradient
                    # or relevance) pass through the last block and the head
                    if where == "forward" or method._needs_grad:
                        assert raised, f"{where} hook on {type(module).__name__}"
                finally:
                    h.remove()
    finally:
        handle.remove()


def test_frozen_model_and_no_grad_context(model, x):
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            a = cv.GenericAttention(model).attribute(x, target=TARGET)
        assert a.abs().sum() > 0
        assert all(not p.requires_grad for p in model.parameters())
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


# ---------------------------------------------------------- Captum's metrics
def _forward(model):
    return lambda inp: model(inp)


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_captum_metrics_accept_output(name, factory, tol, model, x):
    method = factory(model)
    attr = method.attribute(x, target=TARGET)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.01
        return noise, inputs - noise

    torch.manual_seed(0)
    infid = infidelity(
        _forward(model), perturb, x, attr, target=TARGET, n_perturb_samples=2
    )
    assert infid.shape == (4,) and torch.isfinite(infid).all()
    sens = sensitivity_max(method.attribute, x, target=TARGET, n_perturb_samples=2)
    assert sens.shape == (4,) and torch.isfinite(sens).all()
    nt = NoiseTunnel(method)
    smooth = nt.attribute(
        x, nt_type="smoothgrad", nt_samples=2, target=TARGET, stdevs=0.1
    )
    assert smooth.shape == x.shape


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_bad_input(name, factory, tol, model, x):
    method = factory(model)
    with pytest.raises(ValueError, match="B, C, H, W"):
        method.attribute(x[0])
    with pytest.raises(ValueError, match="NaN or Inf"):
        bad = x.clone()
        bad[0, 0, 0, 0] = float("nan")
        method.attribute(bad)
    with pytest.raises(ValueError, match="NaN or Inf"):
        bad = x.clone()
        bad[1, 2, 3, 4] = float("inf")
        method.attribute(bad)
    with pytest.raises(ValueError, match="out of range"):
        method.attribute(x, target=CLASSES)
    with pytest.raises(ValueError, match="out of range"):
        method.attribute(x, target=torch.tensor([0, 1, -1, 2]))
    with pytest.raises(ValueError, match="entries for a batch"):
        method.attribute(x, target=[0, 1])
    with pytest.raises(ValueError, match="takes 32x32 images"):
        method.attribute(images(2, size=48))
    with pytest.raises(ValueError, match="output must be one of"):
        method.attribute(x, output="pixels")


def test_not_a_vit():
    with pytest.raises(UnsupportedModelError, match="Supported families") as err:
        cv.AttentionRollout(torch.nn.Linear(3, 3))
    assert "timm" in str(err.value) and "torchvision" in str(err.value)
    with pytest.raises(UnsupportedModelError):
        cv.GradSAM("not a model")


def test_not_divisible_dynamic():
    model = timm_vit(dynamic_img_size=True)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        cv.AttentionRollout(model).attribute(images(1, size=36))


def test_bad_options(model):
    with pytest.raises(ValueError, match="head_fusion"):
        cv.AttentionRollout(model, head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        cv.AttentionRollout(model, discard_ratio=1.0)
    with pytest.raises(ValueError, match="layer"):
        cv.RawAttention(model, layer=5)
    with pytest.raises(ValueError, match="head"):
        cv.RawAttention(model, head=2)
    with pytest.raises(ValueError, match="query"):
        cv.GradSAM(model, query="rows")
    with pytest.raises(ValueError, match="layer"):
        cv.GenericAttention(model, start_layer=2)


# ---------------------------------------------------- dtypes, modes, contexts
@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_input_dtype_must_match_the_model(name, factory, tol, model, x):
    method = factory(model)
    forwards = []
    handle = model.register_forward_pre_hook(lambda *a: forwards.append(1))
    try:
        for dtype in (torch.float16, torch.bfloat16, torch.float64):
            with pytest.raises(TypeError, match=rf"{dtype}.*torch\.float32"):
                method.attribute(x.to(dtype), target=TARGET)
    finally:
        handle.remove()
    assert forwards == []  # rejected before any forward


@pytest.fixture(scope="module")
def model_bf16():
    return timm_vit().to(torch.bfloat16)


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_half_model(name, factory, tol, model_bf16, x):
    method = factory(model_bf16)
    with pytest.raises(TypeError, match=r"torch\.float32.*torch\.bfloat16"):
        method.attribute(x, target=TARGET)
    # same-dtype half precision works, or is refused with the reason (the
    # tolerance: tests/attr/test_half_precision.py)
    if torch.bfloat16 not in method._half_dtypes:
        with pytest.raises(TypeError, match="does not explain torch.bfloat16"):
            method.attribute(x.to(torch.bfloat16), target=TARGET)
        return
    attr = method.attribute(x.to(torch.bfloat16), target=TARGET, output="tokens")
    assert attr.shape == (4, 4, 4) and torch.isfinite(attr).all()
    assert attr.dtype == torch.float32  # maps of half inputs are float32


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_inference_mode(name, factory, tol, model, x):
    method = factory(model)
    expected = method.attribute(x, target=TARGET)
    with torch.inference_mode():
        made_inside = x.clone()  # an inference tensor
        if method._needs_grad:
            with pytest.raises(RuntimeError, match=r"inference_mode\(False\)"):
                method.attribute(x, target=TARGET)
        else:
            got = method.attribute(x, target=TARGET)
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        with torch.inference_mode(False):
            got = method.attribute(x, target=TARGET)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # an inference tensor is accepted outside inference mode
    got = method.attribute(made_inside, target=TARGET)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_train_mode_with_dropout_warns(name, factory, tol, x):
    model = timm_vit(drop_rate=0.1, attn_drop_rate=0.1, proj_drop_rate=0.1)
    method = factory(model.train())
    with pytest.warns(UserWarning, match=r"model\.eval\(\)"):
        method.attribute(x, target=TARGET)
    model.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method.attribute(x, target=TARGET)
    assert not [w for w in caught if "model.eval()" in str(w.message)]


# ------------------------------------------------------------------ registry
def test_registry_matches_the_contract_list(model):
    """Every registered method is in METHODS (so it gets every test above)
    and is registered in the file that defines it."""
    import sys

    from captum_vit.attr import get_method, list_methods, register_method

    contract = {type(factory(model)) for _, factory, _ in METHODS}
    for name in list_methods():
        cls = get_method(name)
        assert cls in contract, name
        source = open(sys.modules[cls.__module__].__file__).read()
        assert f'@register_method("{name}")\nclass {cls.__name__}(' in source
    assert get_method("rollout") is cv.AttentionRollout
    assert type(cv.attr.create_method("rollout", model)) is cv.AttentionRollout
    with pytest.raises(ValueError, match="available: .*atman, "):
        get_method("no_such_method")
    with pytest.raises(TypeError, match="not a ViTAttribution"):
        register_method("not_a_method")(object)


# -------------------------------------------- windowed, hierarchical models
# The Swin families: every method written over the token graph runs on them
# (contract, batch independence, state restored, bad input); every other
# method refuses them with an error that says why.
def _graph_methods():
    plain = timm_vit()
    return [m for m in METHODS if type(m[1](plain))._any_graph]


GRAPH_METHODS = _graph_methods()
GRAPH_IDS = [m[0] for m in GRAPH_METHODS]


@pytest.fixture(scope="module")
def swin():
    return timm_swin()


@pytest.mark.parametrize("name,factory,tol", GRAPH_METHODS, ids=GRAPH_IDS)
def test_swin_output_contract_and_batch_independence(name, factory, tol, swin, x):
    method = factory(swin)
    attr = method.attribute(x, target=TARGET)
    assert attr.shape == x.shape and attr.dtype == x.dtype
    assert torch.isfinite(attr).all() and not attr.requires_grad
    tokens = method.attribute(x, target=TARGET, output="tokens")
    assert tokens.shape == (4, 8, 8)  # the first stage's grid (4x4 patches)
    assert tokens.flatten(1).std(1).min() > 0
    for i in range(x.shape[0]):
        single = method.attribute(
            x[i : i + 1], target=TARGET[i : i + 1], output="tokens"
        )
        assert _rel(single[0], tokens[i]) < tol, i


@pytest.mark.parametrize("name,factory,tol", GRAPH_METHODS, ids=GRAPH_IDS)
@pytest.mark.parametrize("family", list(SWIN_FAMILIES))
def test_swin_state_restored(name, factory, tol, family, x):
    _check_state_restored(SWIN_FAMILIES[family](), factory, x)


def _check_state_restored(model, factory, x):
    """The model exactly as it was after an explanation and after one that
    raised in the last block (no forward, no rule, no flag left)."""
    adapter = cv.adapters.get(model)
    adapter.blocks()[0].train()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.ones_like(params[-1])
    method = factory(model)
    before = snapshot(model)
    method.attribute(x, target=TARGET)
    assert_same_state(before, snapshot(model))
    h = (
        adapter.block_parts(adapter.num_layers - 1)
        .mlp[0]
        .register_forward_pre_hook(_raise)
    )
    try:
        with pytest.raises(Boom):
            method.attribute(x, target=TARGET)
    finally:
        h.remove()
    assert_same_state(before, snapshot(model))


@pytest.mark.parametrize("name,factory,tol", GRAPH_METHODS, ids=GRAPH_IDS)
def test_swin_bad_input(name, factory, tol, swin, x):
    method = factory(swin)
    with pytest.raises(ValueError, match="B, C, H, W"):
        method.attribute(x[0])
    with pytest.raises(ValueError, match="out of range"):
        method.attribute(x, target=CLASSES)
    with pytest.raises(ValueError, match="takes 32x32 images"):
        method.attribute(images(2, size=48))
    dynamic = factory(timm_swin(strict_img_size=False))
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        dynamic.attribute(images(1, size=34))


@pytest.mark.parametrize(
    "name,factory,tol",
    [m for m in METHODS if m not in GRAPH_METHODS],
    ids=[m[0] for m in METHODS if m not in GRAPH_METHODS],
)
def test_plain_only_methods_refuse_swin(name, factory, tol, swin):
    with pytest.raises(UnsupportedModelError, match="does not apply to Swin"):
        factory(swin)


def test_list_methods_keeps_those_that_apply(model, swin):
    from captum_vit.attr import list_methods

    assert list_methods(model=model) == list_methods()
    on_swin = list_methods(model=swin)
    assert set(on_swin) == {name for name, _, _ in GRAPH_METHODS} & set(list_methods())
    assert "rollout" in on_swin and "atman" not in on_swin
    for name in on_swin:
        cv.attr.create_method(name, swin)  # none refuses


# ------------------------------------------------------ CaiT's two phases
# The methods defined across CaiT's self-attention and class-attention
# phases (docs/token_graph.rst, "CaiT: two phases") keep the contract on it;
# every other method refuses it with an error that says why.
CAIT_METHODS = [m for m in METHODS if type(m[1](timm_vit()))._class_attention]
CAIT_IDS = [m[0] for m in CAIT_METHODS]


@pytest.fixture(scope="module")
def cait():
    return timm_cait()


@pytest.mark.parametrize("name,factory,tol", CAIT_METHODS, ids=CAIT_IDS)
def test_cait_output_contract_and_batch_independence(name, factory, tol, cait, x):
    method = factory(cait)
    attr = method.attribute(x, target=TARGET)
    assert attr.shape == x.shape and attr.dtype == x.dtype
    assert torch.isfinite(attr).all() and not attr.requires_grad
    tokens = method.attribute(x, target=TARGET, output="tokens")
    assert tokens.shape == (4, 4, 4)
    if name != "attention_flow":
        # attention flow on CaiT is uniform over the patches: the class
        # token's edges into the patches are the minimum cut of every flow
        # (docs/token_graph.rst, "CaiT: two phases")
        assert tokens.flatten(1).std(1).min() > 0
    for i in range(x.shape[0]):
        single = method.attribute(
            x[i : i + 1], target=TARGET[i : i + 1], output="tokens"
        )
        assert _rel(single[0], tokens[i]) < tol, i


@pytest.mark.parametrize("name,factory,tol", CAIT_METHODS, ids=CAIT_IDS)
def test_cait_state_restored(name, factory, tol, x):
    """After success and after an exception inside the class-attention
    phase, the model is exactly as it was (no forward, no rule left)."""
    _check_state_restored(timm_cait(), factory, x)


@pytest.mark.parametrize("name,factory,tol", CAIT_METHODS, ids=CAIT_IDS)
def test_cait_bad_input(name, factory, tol, cait, x):
    method = factory(cait)
    with pytest.raises(ValueError, match="B, C, H, W"):
        method.attribute(x[0])
    with pytest.raises(ValueError, match="out of range"):
        method.attribute(x, target=CLASSES)
    with pytest.raises(ValueError, match="takes 32x32 images"):
        method.attribute(images(2, size=48))


@pytest.mark.parametrize(
    "name,factory,tol",
    [m for m in METHODS if m not in CAIT_METHODS],
    ids=[m[0] for m in METHODS if m not in CAIT_METHODS],
)
def test_other_methods_refuse_cait(name, factory, tol, cait):
    """Each says why its own definition does not carry over to CaiT (ViT
    Shapley refuses in its surrogate's check, with its own reason)."""
    cls = type(factory(timm_vit()))
    with pytest.raises(UnsupportedModelError) as err:
        factory(cait)
    assert cls._no_class_attention in str(err.value)
    assert cls._no_class_attention != ViTAttribution._no_class_attention
