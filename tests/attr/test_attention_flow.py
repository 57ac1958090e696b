"""AttentionFlow against a straightforward networkx maximum-flow reference."""

from __future__ import annotations

import multiprocessing

import networkx as nx
import numpy as np
import pytest
import torch

import captum_vit as cv
from captum_vit.attr import attention_flow
from captum_vit.attr.attention_flow import max_flows_to_inputs
from tests import naive
from tests.models import images, timm_swin, timm_vit
from tests.tolerance import assert_close_to_scale


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


class _Pools:
    """Records the worker count of every process pool the solver opens."""

    def __init__(self, monkeypatch):
        self.workers: list = []
        pools = self.workers

        class Recording(attention_flow.ProcessPoolExecutor):
            def __init__(self, max_workers=None, **kw):
                pools.append(max_workers)
                super().__init__(max_workers, **kw)

        monkeypatch.setattr(attention_flow, "ProcessPoolExecutor", Recording)


class _Tasks:
    """Records the token runs ``(start, stop)`` of the tasks handed to the
    workers (the arguments of the pool's ``submit``, in the parent)."""

    def __init__(self, monkeypatch):
        self.ranges: list = []
        ranges = self.ranges
        real_submit = attention_flow.ProcessPoolExecutor.submit

        def submit(pool, fn, problem, rtol, start, stop):
            ranges.append((start, stop))
            return real_submit(pool, fn, problem, rtol, start, stop)

        monkeypatch.setattr(attention_flow.ProcessPoolExecutor, "submit", submit)


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_worker_processes_give_the_one_process_maps(family, monkeypatch):
    """The flows shared by worker processes: the maps and the error bound of
    one process, bit for bit, on the dense ViT network and on Swin's
    windowed, merged one, whether the workers get whole samples (4 images on
    2 processes) or runs of tokens (5 images on 2 processes, one image on
    3); and each sample's map is that of explaining it alone (to the float64
    rounding of the batched forward)."""
    model = (timm_vit() if family == "vit" else timm_swin()).double()
    x = images(5).double()
    N = cv.adapters.get(model).token_graph((32, 32)).stages[0].num_tokens
    pools, tasks = _Pools(monkeypatch), _Tasks(monkeypatch)
    serial = cv.AttentionFlow(model, processes=1)
    expected = serial.attribute(x, output="tokens")
    bound = serial.last_error_bound
    assert pools.workers == [] and tasks.ranges == []  # one process: no pool
    assert 0 < bound <= 1e-6
    parallel = cv.AttentionFlow(model, processes=2)
    # 4 images on 2 processes: whole samples
    assert torch.equal(parallel.attribute(x[:4], output="tokens"), expected[:4])
    assert pools.workers == [2] and tasks.ranges == [(0, N)] * 4
    # 5 images: each cut in two runs of tokens, 10 tasks
    tasks.ranges.clear()
    assert torch.equal(parallel.attribute(x, output="tokens"), expected)
    assert parallel.last_error_bound == bound
    assert pools.workers == [2, 2]
    half = round(N / 2)
    assert tasks.ranges == [(0, half), (half, N)] * 5
    # one image on 3 processes: three runs of tokens
    tasks.ranges.clear()
    three = cv.AttentionFlow(model, processes=3)
    alone = torch.cat(
        [three.attribute(x[i : i + 1], output="tokens") for i in range(5)]
    )
    assert pools.workers == [2, 2] + [3] * 5
    cuts = np.linspace(0, N, 4).round().astype(int)
    assert tasks.ranges == list(zip(cuts[:-1], cuts[1:])) * 5
    singles = torch.cat(
        [serial.attribute(x[i : i + 1], output="tokens") for i in range(5)]
    )
    assert torch.equal(alone, singles)
    assert_close_to_scale(alone, expected, 1e-10)


def test_default_processes_follow_torch_threads(model, x, monkeypatch):
    """``processes=None``: as many workers as torch's threads where
    multiprocessing forks and the networks are large enough; none
    elsewhere."""
    before = multiprocessing.get_start_method(allow_none=True)
    pools = _Pools(monkeypatch)
    monkeypatch.setattr(attention_flow.torch, "get_num_threads", lambda: 4)
    method = cv.AttentionFlow(model)
    # the tiny model's networks are too small to pay for workers
    small = method.attribute(torch.cat([x, x.flip(0), x]), output="tokens")
    assert pools.workers == []
    # samples x input tokens x edges (L dense N x N layers) at the threshold
    adapter = cv.adapters.get(model)
    N = adapter.token_graph((32, 32)).stages[0].num_tokens
    work = 6 * N * adapter.num_layers * N * N
    monkeypatch.setattr(attention_flow, "_PARALLEL_WORK", work + 1)
    method.attribute(torch.cat([x, x.flip(0), x]), output="tokens")
    assert pools.workers == []
    monkeypatch.setattr(attention_flow, "_PARALLEL_WORK", work)
    got = method.attribute(torch.cat([x, x.flip(0), x]), output="tokens")
    assert torch.equal(got, small)
    forks = attention_flow._start_method() == "fork"
    assert pools.workers == ([4] if forks else [])  # 6 images: cut in 2 each
    # reading the start method does not fix it for the user
    assert multiprocessing.get_start_method(allow_none=True) == before
    expected = cv.AttentionFlow(model, processes=1).attribute(
        torch.cat([x, x.flip(0), x]), output="tokens"
    )
    assert torch.equal(got, expected)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_processes(model, bad):
    with pytest.raises(ValueError, match="processes"):
        cv.AttentionFlow(model, processes=bad)


def test_error_bound_of_a_chunked_call_is_the_worst_chunk(model):
    """With ``internal_batch_size`` the batch is explained in chunks;
    ``last_error_bound`` is the largest certified bound of the whole call,
    not the last chunk's."""
    x = images(6)
    method = cv.AttentionFlow(model, processes=1)
    bounds = []
    for i in range(6):
        method.attribute(x[i : i + 1])
        bounds.append(method.last_error_bound)
    order = np.argsort(bounds)[::-1].copy()  # the worst image first
    assert bounds[order[0]] > bounds[order[-1]] > 0
    method.attribute(x[order], internal_batch_size=1)
    assert method.last_error_bound == bounds[order[0]]
    # chunks of two (each chunk's bound from the same computation)
    xs = x[order]
    chunks = []
    for s in range(0, 6, 2):
        method.attribute(xs[s : s + 2])
        chunks.append(method.last_error_bound)
    method.attribute(xs, internal_batch_size=2)
    assert method.last_error_bound == max(chunks) > chunks[-1]
    # and the unchunked call of one image after it: that image's bound
    method.attribute(xs[-1:])
    assert method.last_error_bound == bounds[order[-1]]


def test_solve_samples_builds_lazily_and_matches_one_process():
    """The solver on random dense networks (3 samples of 7 tokens on 2
    processes: each cut in two runs): every sample's network is built once,
    in order, and the flows and bounds are those of one process, bit for
    bit, and those of :func:`max_flows_to_inputs`."""
    rng = np.random.default_rng(0)
    mats = rng.random((3, 4, 7, 7))
    mats /= mats.sum(-1, keepdims=True)
    w = np.zeros(7)
    w[0] = 1.0
    built = []

    def build(b):
        built.append(b)
        L = mats.shape[1]
        edges = [attention_flow._dense_edges(mats[b, L - 1 - k]) for k in range(L)]
        return edges, [7] * (L + 1), w

    serial = attention_flow.solve_samples(build, 3, 1e-9, processes=1)
    assert built == [0, 1, 2]
    built.clear()
    parallel = attention_flow.solve_samples(build, 3, 1e-9, processes=2)
    assert built == [0, 1, 2]
    for (fs, es), (fp, ep), m in zip(serial, parallel, mats):
        assert np.array_equal(fs, fp) and es == ep
        flows, bound = max_flows_to_inputs(m, w, rtol=1e-9)
        assert np.array_equal(flows, fs) and bound == es <= 1e-9
