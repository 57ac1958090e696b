"""The adapter layer: description of each family, tracing, score hooks."""

from __future__ import annotations

import pytest
import torch

from captum_vit import adapters
from captum_vit.adapters import Tracer
from tests import naive
from tests.models import (
    hf_config,
    hf_vit_from_timm,
    images,
    timm_vit,
    torchvision_vit_from_timm,
)


@pytest.fixture(scope="module")
def base():
    return timm_vit()


def _families(base):
    return {
        "timm": base,
        "hf": hf_vit_from_timm(base),
        "torchvision": torchvision_vit_from_timm(base),
    }


def test_description(base):
    for family, model in _families(base).items():
        a = adapters.get(model)
        assert a.num_prefix_tokens == 1, family
        assert a.num_layers == 2 and a.num_heads == 2 and a.num_classes == 5
        assert a.patch_size == (8, 8) and a.grid_size((32, 32)) == (4, 4)
        assert a.pooling == "token" and a.has_class_token
        parts = a.block_parts(0)
        assert parts.attention is not None and len(parts.mlp) >= 2
    regs = adapters.get(timm_vit(reg_tokens=4))
    assert regs.num_prefix_tokens == 5
    avg = adapters.get(timm_vit(class_token=False, global_pool="avg"))
    assert avg.num_prefix_tokens == 0 and avg.pooling == "avg"
    torch.testing.assert_close(avg.pool_weights(4), torch.full((4,), 0.25))
    dyn = adapters.get(timm_vit(dynamic_img_size=True))
    assert dyn.grid_size((48, 40)) == (6, 5)


def test_get_returns_adapter_unchanged(base):
    a = adapters.get(base)
    assert adapters.get(a) is a
    assert repr(a) == "TimmViTAdapter(VisionTransformer)"


def test_trace_records_and_restores(base):
    x = images(3)
    for family, model in _families(base).items():
        a = adapters.get(model)
        plain = a.forward(x)
        tracer = Tracer(keep_values=True, keep_blocks=True, keep_scores=True)
        with a.trace(tracer):
            traced = a.forward(x)
        torch.testing.assert_close(traced, plain, rtol=1e-5, atol=1e-5)
        assert sorted(tracer.attentions) == [0, 1]
        assert tracer.attentions[0].shape == (3, 2, 17, 17)
        assert tracer.values[1].shape == (3, 2, 17, 16)
        assert tracer.scores[0].shape == (3, 2, 17, 17)
        assert tracer.block_inputs[0].shape == (3, 17, 32)
        torch.testing.assert_close(tracer.block_inputs[1], tracer.block_outputs[0])
        torch.testing.assert_close(
            tracer.attentions[1].sum(-1), torch.ones(3, 2, 17), rtol=1e-5, atol=1e-5
        )
        for blk in a.blocks():
            assert "forward" not in blk.__dict__, family
            assert "forward" not in a.block_parts(0).attention.__dict__


def test_trace_restores_user_instance_forward(base):
    a = adapters.get(base)
    blk = base.blocks[0]
    original = blk.forward
    blk.forward = original  # a user-set instance attribute
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with a.trace():
                assert blk.forward is not original
                raise RuntimeError("inside the context")
        assert blk.__dict__["forward"] is original
    finally:
        del blk.forward


def test_score_hook_masks_tokens_like_naive(base):
    """A -inf bias on the keys of token 3 in every layer, in every family,
    equals the naive forward with the same masking."""
    x = images(2)

    def hook(layer, scores):
        bias = torch.zeros_like(scores)
        bias[..., 3] = float("-inf")
        return scores + bias

    expected, attns = naive.forward(base, x, score_bias=hook)
    assert attns[0][..., 3].abs().max() == 0
    for family, model in _families(base).items():
        a = adapters.get(model)
        with a.trace(Tracer(score_hook=hook)) as tracer:
            got = a.forward(x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=family)
        assert tracer.attentions[1][..., 3].abs().max() == 0


def test_residual_hook_is_used(base):
    calls = []

    class Counting(Tracer):
        def residual(self, layer, index, x, branch):
            calls.append((layer, index))
            return x + branch

    for model in _families(base).values():
        calls.clear()
        a = adapters.get(model)
        with a.trace(Counting()):
            a.forward(images(1))
        assert calls == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_unsupported_models():
    with pytest.raises(adapters.UnsupportedModelError, match="Supported families"):
        adapters.get(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    # global_pool="map" is supported (tests/adapters/test_clip.py); "prr" not
    with pytest.raises(adapters.UnsupportedModelError, match="AttentionPoolPrr"):
        adapters.get(timm_vit(global_pool="prr"))
    families = adapters.supported_families()
    assert len(families) == len(set(families)) >= 3
    assert sum("Swin" in f for f in families) == 3


def test_swin_models_the_adapters_refuse():
    from tests.models import hf_swin_from_timm, timm_swin

    with pytest.raises(adapters.UnsupportedModelError, match="global_pool"):
        adapters.get(timm_swin(global_pool=""))
    # Hugging Face Swin v1 shrinks its window to a small stage grid; a window
    # that no longer matches the relative position table is a clear error
    hf = hf_swin_from_timm(timm_swin())
    with pytest.raises(ValueError, match="relative position table"):
        adapters.get(hf).check_image_size((16, 16))
    adapters.get(hf).check_image_size((40, 40))  # padded: fine


def test_recording_only_some_layers_uses_fused_attention(base):
    x = images(2)
    a = adapters.get(base)
    with a.trace(Tracer(layers=[1])) as tracer:
        got = a.forward(x)
    assert sorted(tracer.attentions) == [1]
    torch.testing.assert_close(got, base(x), rtol=1e-5, atol=1e-5)


def test_forward_rejects_outputs_that_are_not_logits(base):
    a = adapters.get(base)
    a._call_model = lambda x: torch.zeros(x.shape[0], 3, 4)
    with pytest.raises(ValueError, match="expected logits"):
        a.forward(images(2))
    a._call_model = lambda x: (torch.zeros(2, 5),)
    with pytest.raises(ValueError, match="expected logits"):
        a.forward(images(2))


# ------------------------------------------------------------------ threads
def _append_lock(out, model):
    out.append(adapters.model_lock(model))


def test_model_lock_is_per_model_and_not_on_the_model():
    import gc
    import threading
    import weakref

    from captum_vit.adapters import _surgery

    model, other = timm_vit(), timm_vit()
    keys = set(model.__dict__)
    lock = adapters.model_lock(model)
    seen = []
    t = threading.Thread(target=_append_lock, args=(seen, model))
    t.start()
    t.join()
    assert seen[0] is lock and adapters.model_lock(other) is not lock
    assert set(model.__dict__) == keys
    with lock:  # re-entrant: a trace inside a held lock does not deadlock
        with adapters.get(model).trace():
            adapters.get(model).forward(images(1))
    alive = weakref.ref(model)
    n = len(_surgery._LOCKS)
    del model, lock, seen, t
    gc.collect()
    assert alive() is None  # the lock table does not keep the model alive
    assert len(_surgery._LOCKS) < n


def test_trace_routes_other_threads_to_the_previous_forward(base):
    """Inside a trace, another thread's call reaches the user's own instance
    forward (or the class's), never the tracer."""
    import threading

    a = adapters.get(base)
    blk0, blk1 = base.blocks[0], base.blocks[1]
    calls = []

    def user_forward(x, **kwargs):
        calls.append(threading.get_ident())
        return type(blk0).forward(blk0, x, **kwargs)

    blk0.forward = user_forward
    x = images(2)
    plain = base(x)
    got = []
    try:
        tracer = Tracer()
        with a.trace(tracer):
            t = threading.Thread(target=lambda: got.append(base(x)))
            t.start()
            t.join()
            assert tracer.attentions == {}  # the other thread's forward
            traced = base(x)
            assert sorted(tracer.attentions) == [0, 1]
        assert blk0.__dict__["forward"] is user_forward
        assert "forward" not in blk1.__dict__
    finally:
        del blk0.forward
    assert torch.equal(got[0], plain)
    torch.testing.assert_close(traced, plain, rtol=1e-5, atol=1e-6)
    assert calls[1] == t.ident  # the user's forward ran in the other thread


# ---------------------------------------------------------------- wrappers
def _process_group():
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return dist


def test_wrappers_are_unwrapped(base):
    """DataParallel, DistributedDataParallel and torch.compile: the
    explanation runs the wrapped module and equals the plain model's."""
    import captum_vit as cv

    x = images(2)
    expected = cv.GradSAM(base).attribute(x, target=1, output="tokens")
    dist = _process_group()
    try:
        wrapped = {
            "DataParallel": torch.nn.DataParallel(base),
            "DistributedDataParallel": torch.nn.parallel.DistributedDataParallel(base),
            "compile": torch.compile(base),
            "compile(DataParallel)": torch.compile(torch.nn.DataParallel(base)),
        }
        for kind, model in wrapped.items():
            assert adapters.get(model).model is base, kind
            got = cv.GradSAM(model).attribute(x, target=1, output="tokens")
            assert torch.equal(got, expected), kind
            assert torch.equal(cv.forward_func(model)(x), base(x)), kind
    finally:
        dist.destroy_process_group()


def test_sharded_and_unknown_wrappers_say_what_to_pass():
    from torch.distributed.fsdp import fully_shard

    dist = _process_group()
    try:
        sharded = fully_shard(timm_vit())
        with pytest.raises(adapters.UnsupportedModelError, match="unsharded"):
            adapters.get(sharded)
    finally:
        dist.destroy_process_group()

    class MyWrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    with pytest.raises(adapters.UnsupportedModelError, match=r"wrapped.*\.module"):
        adapters.get(MyWrapper(timm_vit()))


# ------------------------------------------------ Hugging Face distilled DeiT
def test_hf_deit_with_teacher_random_init():
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    import captum_vit as cv

    torch.manual_seed(0)
    model = DeiTForImageClassificationWithTeacher(hf_config(DeiTConfig)).eval()
    a = adapters.get(model)
    assert a.num_prefix_tokens == 2 and a.num_classes == 5
    assert len(a.head_parts().classifiers) == 2
    torch.testing.assert_close(a.pool_weights(4), torch.tensor([0.5, 0.5, 0.0, 0.0]))
    x = images(2)
    out = model(x)
    torch.testing.assert_close(a.forward(x), out.logits)
    for tracer in (Tracer(), cv.attr._lrp.LRPTracer(cv.attr._lrp.RuleSet())):
        with a.trace(tracer):
            traced = a.forward(x)
        torch.testing.assert_close(traced, out.logits, rtol=1e-5, atol=1e-6)
        assert tracer.attentions[1].shape == (2, 2, 18, 18)
    assert cv.AttnLRP(model).attribute(x, target=1).shape == x.shape


def test_hf_deit_with_teacher_agrees_with_timm():
    """The same weights in timm's distilled DeiT and in Hugging Face's
    ``DeiTForImageClassificationWithTeacher`` give the same maps (float64)."""
    import captum_vit as cv

    timm_model = timm_vit(distilled=True).double()
    hf = hf_vit_from_timm(timm_model).double()
    x = images(3).double()
    torch.testing.assert_close(
        adapters.get(hf).forward(x), timm_model(x), rtol=1e-10, atol=1e-12
    )
    for method in (
        cv.RawAttention,
        cv.AttentionRollout,
        cv.GradSAM,
        cv.GenericAttention,
        cv.TransformerLRP,
        cv.LRP,
        cv.AttnLRP,
        cv.ATMAN,
    ):
        expected = method(timm_model).attribute(x, target=2, output="tokens")
        got = method(hf).attribute(x, target=2, output="tokens")
        err = (got - expected).abs().max() / expected.abs().max()
        assert err < 1e-9, method.__name__


# --------------------------------------------------------------- dropout
def test_stochastic_modules_in_every_family():
    from transformers import ViTConfig, ViTForImageClassification

    from tests.models import torchvision_vit_from_timm as tv_from

    timm_model = timm_vit(attn_drop_rate=0.1, drop_path_rate=0.1)
    hf = ViTForImageClassification(
        hf_config(ViTConfig, attention_probs_dropout_prob=0.1)
    )
    tv = tv_from(timm_vit())
    for blk in tv.encoder.layers:
        blk.self_attention.dropout = 0.1
    for model in (timm_model, hf, tv):
        a = adapters.get(model)
        model.eval()
        assert a.stochastic_modules() == []
        model.train()
        names = a.stochastic_modules()
        assert names and all(isinstance(n, str) for n in names), type(model)
        model.eval()
    # train mode without dropout is deterministic: nothing to report
    assert adapters.get(timm_vit().train()).stochastic_modules() == []


def test_tracer_declares_its_explicit_layers(base):
    """Layers outside ``layers`` run the fused kernel unless the tracer says
    otherwise (no comparison of methods)."""

    class Cooler(Tracer):  # halves the scores of every layer
        def softmax(self, layer, scores):
            return super().softmax(layer, scores * 0.5)

        def explicit(self, layer):
            return True

    def halve(layer, scores):
        return scores * 0.5

    x = images(2)
    a = adapters.get(base)
    with a.trace(Cooler(layers=[0])):
        got = a.forward(x)
    with a.trace(Tracer(score_hook=halve)):
        expected = a.forward(x)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got, base(x), rtol=1e-3, atol=1e-3)
    partial = Tracer(layers=[1])
    assert not partial.explicit(0) and partial.explicit(1)
    assert Tracer().explicit(0) and Tracer(layers=(), score_hook=halve).explicit(0)
