"""``torch.compile``d models and ``channels_last`` inputs on every method of
the contract list: explained with the maps of the eager model and of
contiguous inputs, bit for bit, without compiling anything."""

from __future__ import annotations

import copy

import pytest
import torch

import captum_vit as cv
from tests.attr.test_contract import IDS, METHODS, TARGET
from tests.models import images, timm_vit
from tests.tolerance import assert_close_to_scale


class CountingBackend:
    """A ``torch.compile`` backend that counts the graphs it compiles and
    runs them eagerly."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture(scope="module")
def model():
    return timm_vit()


@pytest.fixture(scope="module")
def x():
    return images(4)


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_compiled_models_give_the_eager_maps(name, factory, tol, model, x):
    expected = factory(model).attribute(x, target=TARGET, output="tokens")
    backend = CountingBackend()
    wrapped = torch.compile(model, backend=backend)  # an OptimizedModule
    in_place = copy.deepcopy(model)
    in_place.compile(backend=backend)  # nn.Module.compile: the same object
    compiled_impl = in_place._compiled_call_impl
    for compiled in (wrapped, in_place):
        method = factory(compiled)
        got = method.attribute(x, target=TARGET, output="tokens")
        assert torch.equal(got, expected)
        assert method.attribute(x).shape == x.shape
    # the explanation ran the eager modules: dynamo compiled nothing
    assert backend.graphs == 0
    assert in_place._compiled_call_impl is compiled_impl
    assert "_compiled_call_impl" in in_place.__dict__


def test_compiled_model_still_compiles_and_other_threads_keep_it(model, x):
    backend = CountingBackend()
    in_place = copy.deepcopy(model)
    in_place.compile(backend=backend)
    method = cv.GenericAttention(in_place)
    method.attribute(x, target=TARGET)
    assert backend.graphs == 0
    with torch.no_grad():
        out = in_place(x)  # the user's own call: compiled
    assert backend.graphs > 0
    torch.testing.assert_close(out, model(x).detach(), rtol=1e-5, atol=1e-6)
    # inside an explanation, another thread's call runs the compiled model
    seen = []
    adapter = cv.adapters.get(in_place)
    with adapter.eager():
        import threading

        def call():
            before = backend.graphs
            with torch.no_grad():
                in_place(x[:1])  # a new shape: dynamo compiles again
            seen.append(backend.graphs > before)

        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
    assert seen == [True]


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_channels_last_inputs_give_the_contiguous_maps(name, factory, tol, model, x):
    method = factory(model)
    last = x.contiguous(memory_format=torch.channels_last)
    assert not last.is_contiguous()
    for output in ("tokens", "input"):
        expected = method.attribute(x, target=TARGET, output=output)
        got = method.attribute(last, target=TARGET, output=output)
        assert torch.equal(got, expected), output
    assert got.shape == x.shape
    assert got.is_contiguous()  # the standard layout, like Captum's maps


@pytest.mark.parametrize("name,factory,tol", METHODS, ids=IDS)
def test_channels_last_model(name, factory, tol, model, x):
    """A model converted to channels_last (its patch embedding's weight)
    explains with the maps of the standard model, to float rounding."""
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    expected = factory(model).attribute(x, target=TARGET, output="tokens")
    for inputs in (x, x.contiguous(memory_format=torch.channels_last)):
        got = factory(last).attribute(inputs, target=TARGET, output="tokens")
        assert_close_to_scale(got, expected, tol)
