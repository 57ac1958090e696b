"""Several threads explaining one model at once.

Every region that changes the model (the adapter's tracing, the LRP engine's
module patching) is serialised per model, and the temporary forwards route
calls from other threads to the stock code. So concurrent calls, of the same
method instance or of different methods, give exactly the sequential results,
a plain forward beside them gives exactly the plain logits, and the model is
left as it was, also when one thread's call raises.

The model and inputs are float64 and a forward hook sleeps briefly inside
every forward, so threads interleave in the middle of each other's forwards
(before serialisation this made every run fail).
"""

from __future__ import annotations

import io
import threading
import time
from typing import Callable, Dict, List, Tuple

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn

import captum_vit as cv
from captum_vit.adapters import get as get_adapter
from tests.models import (
    hf_beit_from_timm,
    hf_vit_from_timm,
    images,
    timm_beit,
    timm_vit,
    torchvision_vit_from_timm,
)

TARGET = torch.tensor([0, 3, 1, 4])
THREADS = 4

# (id, factory): gradient, LRP, perturbation and attention methods
METHODS: List[Tuple[str, Callable[[nn.Module], cv.ViTAttribution]]] = [
    ("grad_sam", lambda m: cv.GradSAM(m)),
    ("generic_attention", lambda m: cv.GenericAttention(m)),
    ("transformer_lrp", lambda m: cv.TransformerLRP(m)),
    ("lrp", lambda m: cv.LRP(m)),
    ("attn_lrp", lambda m: cv.AttnLRP(m)),
    ("atman", lambda m: cv.ATMAN(m, internal_batch_size=8)),
    ("rollout", lambda m: cv.AttentionRollout(m)),
]
HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)

# threads whose forwards fail (see _boom); module-level so the hook pickles
_VICTIMS: set = set()


class Boom(RuntimeError):
    pass


def _yield(module: nn.Module, inputs: tuple, output: Tensor) -> None:
    """Forward hook: give the other threads the interpreter mid-forward."""
    time.sleep(5e-4)


def _boom(module: nn.Module, inputs: tuple) -> None:
    """Forward pre-hook that raises only on the victim threads."""
    if threading.get_ident() in _VICTIMS:
        raise Boom("raised on one thread only")


def _model(family: str = "timm") -> nn.Module:
    base = timm_vit()
    model = {
        "timm": lambda: base,
        "hf": lambda: hf_vit_from_timm(base),
        "torchvision": lambda: torchvision_vit_from_timm(base),
        "timm_beit": timm_beit,
        "hf_beit": lambda: hf_beit_from_timm(timm_beit()),
    }[family]().double()
    get_adapter(model).blocks()[0].register_forward_hook(_yield)
    return model


def state(model: nn.Module) -> tuple:
    """Everything an explanation must leave unchanged."""
    mods = {}
    for name, m in model.named_modules():
        mods[name] = (
            sorted(m.__dict__),  # a left-over instance forward shows up here
            m.training,
            getattr(m, "fused_attn", None),
            tuple(tuple(getattr(m, h).items()) for h in HOOKS),
        )
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    values = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return mods, grads, values


def assert_same_state(before: tuple, model: nn.Module) -> None:
    mods, grads, values = state(model)
    assert mods == before[0]
    assert grads == before[1]
    assert values.keys() == before[2].keys()
    for k, v in values.items():
        assert torch.equal(v, before[2][k]), k
    torch.save(model, io.BytesIO())  # no local function left on the model


def run_threads(jobs: List[Callable[[], None]]) -> List[BaseException]:
    """Run each job in its own thread, all released at once; their errors."""
    barrier = threading.Barrier(len(jobs))
    errors: List[BaseException] = []

    def wrap(job: Callable[[], None]) -> None:
        try:
            barrier.wait()
            job()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def _check(got: Tensor, expected: Tensor, name: str) -> None:
    scale = expected.abs().max().clamp_min(1e-300)
    err = ((got - expected).abs().max() / scale).item()
    assert err <= 1e-12, f"{name}: relative error {err:.3g}"


def _sequential(model: nn.Module, x: Tensor) -> Dict[str, Tensor]:
    return {
        name: factory(model).attribute(x, target=TARGET, output="tokens")
        for name, factory in METHODS
    }


@pytest.fixture(scope="module")
def x() -> Tensor:
    return images(4).double()


def test_threads_get_sequential_results(x):
    model = _model()
    expected = _sequential(model, x)
    before = state(model)
    shared = {name: factory(model) for name, factory in METHODS}

    def job(offset: int) -> Callable[[], None]:
        def run() -> None:
            order = METHODS[offset:] + METHODS[:offset]
            for rnd in range(2):
                for name, factory in order:
                    # one method instance shared by every thread, then a fresh one
                    method = shared[name] if rnd == 0 else factory(model)
                    got = method.attribute(x, target=TARGET, output="tokens")
                    _check(got, expected[name], name)

        return run

    errors = run_threads([job(i) for i in range(THREADS)])
    assert not errors, errors
    assert_same_state(before, model)


def test_one_thread_raises_others_succeed(x):
    model = _model()
    expected = _sequential(model, x)
    get_adapter(model).blocks()[1].register_forward_pre_hook(_boom)
    before = state(model)

    def good(offset: int) -> Callable[[], None]:
        def run() -> None:
            for name, factory in METHODS[offset:] + METHODS[:offset]:
                got = factory(model).attribute(x, target=TARGET, output="tokens")
                _check(got, expected[name], name)

        return run

    def victim() -> None:
        _VICTIMS.add(threading.get_ident())
        try:
            for _, factory in METHODS:
                with pytest.raises(Boom):
                    factory(model).attribute(x, target=TARGET, output="tokens")
        finally:
            _VICTIMS.discard(threading.get_ident())

    errors = run_threads([good(0), victim, good(3), good(5)])
    assert not errors, errors
    assert_same_state(before, model)


@pytest.mark.parametrize(
    "family", ["timm", "hf", "torchvision", "timm_beit", "hf_beit"]
)
def test_plain_forward_beside_explanations(family, x):
    model = _model(family)
    forward = cv.forward_func(model)
    with torch.no_grad():
        logits = forward(x)
    ig = IntegratedGradients(forward)
    ig_expected = ig.attribute(x, target=TARGET, n_steps=4)
    names = ("transformer_lrp", "attn_lrp", "grad_sam", "atman")
    factories = dict(METHODS)
    expected = {n: factories[n](model).attribute(x, target=TARGET) for n in names}
    before = state(model)

    def plain() -> None:
        for _ in range(20):
            with torch.no_grad():
                got = forward(x)
            assert torch.equal(got, logits), "a plain forward ran a traced path"
        got = ig.attribute(x, target=TARGET, n_steps=4)
        assert torch.equal(got, ig_expected), "Integrated Gradients changed"

    def explain(name: str) -> Callable[[], None]:
        def run() -> None:
            for _ in range(2):
                got = factories[name](model).attribute(x, target=TARGET)
                _check(got, expected[name], name)

        return run

    errors = run_threads([plain] + [explain(n) for n in names])
    assert not errors, errors
    assert_same_state(before, model)


def test_lrp_never_writes_the_shared_rule_set(x):
    """The pass's Mode lives on a per-call copy of the rule set, so threads
    sharing one method instance cannot switch each other's rules."""
    from captum_vit.attr._lrp import lrp_context

    model = timm_vit()
    method = cv.AttnLRP(model)
    rules = method.rules
    before = dict(rules.__dict__)
    with lrp_context(method.adapter, rules) as tracer:
        assert tracer.rules is not rules and tracer.rules.mode is not None
        assert rules.mode is None
    assert rules.__dict__ == before


@pytest.mark.parametrize("family", ["timm", "hf", "torchvision"])
def test_swin_threads_get_sequential_results(family):
    """The Swin adapters' temporary forwards (blocks, window attention, the
    Swin v2 cosine norms and the poolings of the LRP engine) are serialised
    and routed the same way: concurrent explanations of one Swin v2 give the
    sequential maps, a plain forward beside them the stock logits."""
    from tests.models import hf_swin_from_timm, timm_swin, torchvision_swin_from_timm

    base = timm_swin(v2=True)
    model = {
        "timm": lambda: base,
        "hf": lambda: hf_swin_from_timm(base),
        "torchvision": lambda: torchvision_swin_from_timm(base),
    }[family]().double()
    get_adapter(model).blocks()[0].register_forward_hook(_yield)
    names = ("grad_sam", "generic_attention", "transformer_lrp", "attn_lrp", "rollout")
    _check_threads_match_sequential(model, names)


def _check_threads_match_sequential(model, names) -> None:
    """Three threads explaining ``model`` with ``names`` (rotated) get the
    sequential maps; a fourth thread's plain forwards the stock logits."""
    x = images(4).double()
    factories = dict(METHODS)
    expected = {
        n: factories[n](model).attribute(x, target=TARGET, output="tokens")
        for n in names
    }
    forward = cv.forward_func(model)
    with torch.no_grad():
        logits = forward(x)
    before = state(model)

    def plain() -> None:
        for _ in range(10):
            with torch.no_grad():
                assert torch.equal(forward(x), logits)

    def explain(offset: int) -> Callable[[], None]:
        def run() -> None:
            for name in names[offset:] + names[:offset]:
                got = factories[name](model).attribute(
                    x, target=TARGET, output="tokens"
                )
                _check(got, expected[name], name)

        return run

    errors = run_threads([plain] + [explain(i) for i in range(3)])
    assert not errors, errors
    assert_same_state(before, model)


def test_cait_threads_get_sequential_results():
    """The CaiT adapter's temporary forwards (both phases' blocks and
    attention, the talking-heads maps and layer scales of the LRP engine) are
    serialised and routed the same way: concurrent explanations of one CaiT
    give the sequential maps, a plain forward beside them the stock logits."""
    from tests.models import timm_cait

    model = timm_cait().double()
    get_adapter(model).blocks()[-1].register_forward_hook(_yield)
    names = ("grad_sam", "transformer_lrp", "attn_lrp", "rollout", "lrp")
    _check_threads_match_sequential(model, names)
