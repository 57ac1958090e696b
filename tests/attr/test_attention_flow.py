"""AttentionFlow against a straightforward networkx maximum-flow reference."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

import captum_vit as cv
from captum_vit.attr.attention_flow import max_flows_to_inputs
from tests import naive
from tests.models import images, timm_vit


def _fused(model, x, head_fusion):
    with torch.no_grad():
        _, attns = naive.forward(model, x)
    op = {"mean": torch.mean, "max": torch.amax, "min": torch.amin}[head_fusion]
    mats = []
    for a in attns:
        f = op(a.double(), dim=1)
        f = f + torch.eye(f.shape[-1], dtype=f.dtype)
        mats.append(f / f.sum(-1, keepdim=True))
    return torch.stack(mats, 1).numpy()  # (B, L, N, N)


def networkx_flow(mats, source_caps):
    """The authors' graph (samiraabnar/attention_flow, ``get_adjmat`` and
    ``compute_node_flow``): node (l, i) -> (l - 1, j) with capacity
    mats[l - 1][i, j]; a source feeds the last layer with ``source_caps``."""
    L, N, _ = mats.shape
    G = nx.DiGraph()
    for n in range(N):
        if source_caps[n] > 0:
            G.add_edge("s", (L, n), capacity=float(source_caps[n]))
    for layer in range(1, L + 1):
        for i in range(N):
            for j in range(N):
                G.add_edge(
                    (layer, i), (layer - 1, j), capacity=float(mats[layer - 1][i, j])
                )
    # Edmonds-Karp as in the authors' code (networkx's default preflow-push
    # can fail on float capacities)
    algo = nx.algorithms.flow.edmonds_karp
    return np.array(
        [nx.maximum_flow(G, "s", (0, v), flow_func=algo)[0] for v in range(N)]
    )


@pytest.fixture(scope="module")
def model():
    return timm_vit()


@pytest.fixture(scope="module")
def x():
    return images(2)


def _reference(model, x, head_fusion="mean", normalize=True):
    mats = _fused(model, x, head_fusion)
    N = mats.shape[-1]
    w = np.zeros(N)
    if model.global_pool == "avg":
        w[model.num_prefix_tokens :] = 1.0 / (N - model.num_prefix_tokens)
    else:
        w[0] = 1.0
    out = []
    for b in range(mats.shape[0]):
        f = networkx_flow(mats[b], w)
        out.append(f / f.sum() if normalize else f)
    return torch.tensor(np.stack(out))[:, model.num_prefix_tokens :].reshape(-1, 4, 4)


@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
def test_matches_networkx(model, x, head_fusion):
    expected = _reference(model, x, head_fusion)
    method = cv.AttentionFlow(model, head_fusion=head_fusion)
    got = method.attribute(x, output="tokens").double()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    assert 0 <= method.last_error_bound <= 1e-6


def test_float64_precision_and_unnormalised(model, x):
    expected = _reference(model, x, normalize=False)
    method = cv.AttentionFlow(model, normalize=False, rtol=1e-12)
    got = method.attribute(x, output="tokens").double()
    # float32 output of exact float64 flows
    torch.testing.assert_close(got, expected.float().double(), rtol=1e-7, atol=0)
    assert method.last_error_bound <= 1e-12
    assert (expected <= 1 + 1e-12).all()


def test_average_pooled_model(x):
    model = timm_vit(global_pool="avg")
    expected = _reference(model, x)
    got = cv.AttentionFlow(model).attribute(x, output="tokens").double()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_hand_computed_graphs():
    # one layer: every last-layer node has a single edge to v
    mats = np.array([[[0.6, 0.4], [0.3, 0.7]]])
    flows, bound = max_flows_to_inputs(mats, np.array([0.5, 0.5]), rtol=1e-12)
    np.testing.assert_allclose(flows, [0.5 + 0.3, 0.4 + 0.5], rtol=1e-12)
    assert bound <= 1e-12
    # two layers, a bottleneck in the middle: cls -> (a: 0.9, b: 0.1);
    # a -> input 0 only through 0.2, b -> input 0 through 1.0
    mats = np.array(
        [
            [[0.2, 0.8], [1.0, 0.0]],  # block 1 (input side)
            [[0.9, 0.1], [0.5, 0.5]],  # block 2
        ]
    )
    flows, _ = max_flows_to_inputs(mats, np.array([1.0, 0.0]), rtol=1e-12)
    np.testing.assert_allclose(flows, [0.2 + 0.1, 0.8], rtol=1e-12)


def test_class_agnostic_and_tiny_capacities(model, x):
    method = cv.AttentionFlow(model)
    torch.testing.assert_close(
        method.attribute(x, target=0), method.attribute(x, target=4), rtol=0, atol=0
    )
    # capacities far below the integer resolution are recovered by refinement
    mats = np.array([[[1e-12, 1 - 1e-12], [0.5, 0.5]]])
    flows, _ = max_flows_to_inputs(mats, np.array([1.0, 0.0]), rtol=1e-9)
    np.testing.assert_allclose(flows, [1e-12, 1 - 1e-12], rtol=1e-9)


def test_bad_options(model):
    with pytest.raises(ValueError, match="head_fusion"):
        cv.AttentionFlow(model, head_fusion="median")
    with pytest.raises(ValueError, match="rtol"):
        cv.AttentionFlow(model, rtol=0.0)
    with pytest.raises(ValueError, match="B, C, H, W"):
        cv.AttentionFlow(model).attribute(torch.zeros(3, 32, 32))
