"""Attention flow (Abnar & Zuidema, 2020), exact and fast."""

from __future__ import annotations

import math
import multiprocessing
import numbers
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from scipy.sparse import csc_array, csr_array
from scipy.sparse.csgraph import breadth_first_order, maximum_flow
from torch import Tensor, nn

from ..adapters import TokenGraph
from ._base import GraphAttribution, check_head_fusion, fuse_heads
from ._graph import MixingTracer, patch_scores, pool_row
from ._registry import register_method

__all__ = ["AttentionFlow", "max_flows_to_inputs"]

#: integer capacities handed to scipy are at most this (scipy uses int32)
_INT_SCALE = float(2**30)
_MAX_STAGES = 6


#: one edge set between consecutive node levels: ``(rows, cols, caps)``, the
#: edge from token ``rows[e]`` of the upper level to token ``cols[e]`` of the
#: level below with capacity ``caps[e]``
Edges = Tuple[np.ndarray, np.ndarray, np.ndarray]


def _dense_edges(mat: np.ndarray) -> Edges:
    n, m = mat.shape
    r, c = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    return r.ravel(), c.ravel(), mat.ravel()


class _LayeredGraph:
    """CSR structure of the attention graph of one sample, reverse edges included.

    Node levels ``k = 0, ..., K``: level 0 holds the tokens after the last
    block, level ``K`` the input tokens; ``edges[k]`` joins level ``k`` to
    level ``k + 1`` (a block's residual-adjusted attention, or a merge map of
    a hierarchical model) and ``sizes[k]`` counts the tokens of level ``k``.
    Nodes: ``0`` the source, then the tokens of levels ``0 .. K - 1`` in
    order; the sink (last node) stands for the one input token whose flow is
    computed (the other input tokens have no outgoing edge, so they cannot
    carry flow to it and are left out). Every edge ``e`` is stored together
    with its reverse ``e^R`` so that the residual network of any flow lives
    on the same structure (CSR order, rows then columns); ``forward`` marks
    the original edges. Only the capacities of the edges into the sink (one
    from every token of level ``K - 1``) depend on the input token.
    """

    def __init__(self, edges: List[Edges], sizes: List[int], w: np.ndarray) -> None:
        K = len(edges)
        offsets = 1 + np.concatenate([[0], np.cumsum(sizes[: K - 1])]).astype(np.int64)
        self.num_nodes = 2 + int(sum(sizes[:K]))
        self.sink = self.num_nodes - 1
        tokens = np.flatnonzero(w > 0)
        rows = [np.zeros(len(tokens), dtype=np.int64)]
        cols = [offsets[0] + tokens]
        caps = [w[tokens]]
        for k in range(K - 1):
            r, c, cap = edges[k]
            if k == 0:  # last-layer tokens the source does not feed are unreachable
                keep = np.isin(r, tokens)
                r, c, cap = r[keep], c[keep], cap[keep]
            rows.append(offsets[k] + r)
            cols.append(offsets[k + 1] + c)
            caps.append(cap)
        n_last = sizes[K - 1]
        rows.append(offsets[K - 1] + np.arange(n_last))
        cols.append(np.full(n_last, self.sink))
        row_ids, col_ids = np.concatenate(rows), np.concatenate(cols)
        E = len(row_ids)
        all_r = np.concatenate([row_ids, col_ids])
        all_c = np.concatenate([col_ids, row_ids])
        perm = np.lexsort((all_c, all_r))  # CSR order of the 2E entries
        self.rows, self.cols = all_r[perm], all_c[perm]
        self.indices = self.cols.astype(np.int32)
        self.indptr = self._indptr(self.rows)
        self.forward = perm < E
        self.fw_indices = self.indices[self.forward]
        self.fw_indptr = self._indptr(self.rows[self.forward])
        pos = np.empty(2 * E, dtype=np.int64)
        pos[perm] = np.arange(2 * E)
        # capacities of every edge except those into the sink, in CSR order
        self.base = np.zeros(2 * E)
        self.base[pos[: E - n_last]] = np.concatenate(caps)
        self.upper = float(w.sum())  # the source cut
        self.sink_pos = pos[E - n_last : E]
        r, c, cap = edges[K - 1]
        self.last = csc_array((cap, (r, c)), shape=(n_last, sizes[K]))
        self.num_inputs = sizes[K]
        # stage-0 integer capacities (scale 2^30, all capacities are <= 1),
        # also restricted to the forward edges (what scipy is given)
        self.icap0 = np.floor(self.base * _INT_SCALE).astype(np.int32)
        self.icap0_fw = self.icap0[self.forward]
        fw_pos = np.cumsum(self.forward) - 1
        self.sink_pos_fw = fw_pos[self.sink_pos]

    @classmethod
    def dense(cls, mats: np.ndarray, w: np.ndarray) -> _LayeredGraph:
        """The graph of ``(L, N, N)`` capacities, ``mats[l][i, j]`` from token
        ``i`` after block ``l`` to token ``j`` before it."""
        L, N, _ = mats.shape
        edges = [_dense_edges(mats[L - 1 - k]) for k in range(L)]
        return cls(edges, [N] * (L + 1), w)

    def _indptr(self, rows: np.ndarray) -> np.ndarray:
        counts = np.bincount(rows, minlength=self.num_nodes)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)

    def _csr(
        self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray
    ) -> csr_array:
        return csr_array((data, indices, indptr), shape=(self.num_nodes,) * 2)

    def max_flow(self, v: int, rtol: float) -> Tuple[float, float]:
        """Maximum flow to input token ``v`` by integer refinement.

        Each stage solves the residual network with capacities
        ``floor(r * S)`` with scipy (``S`` maps the largest capacity to
        :math:`2^{30}`), which is a feasible flow of the real network, then
        certifies the remainder with the cut of the stage's integer residual
        network (the nodes reachable from the source): every edge leaving it
        has integer residual 0, so real residual below one unit, and the real
        residual across the cut bounds what is left. While that bound exceeds
        ``rtol`` times the flow, the real residual network (capacities clipped
        to the bound, which no edge of an acyclic remaining flow can exceed)
        is solved again at the finer scale.

        Returns:
            ``(flow, bound)``: the flow value and a certified upper bound on
            ``max_flow - flow``.
        """
        c_sink = self.last[:, [v]].toarray().ravel()
        cap = self.base  # the sink entries are set for this token, in place
        cap[self.sink_pos] = c_sink
        total, clip, r = 0.0, 1.0, None
        for stage in range(_MAX_STAGES):
            scale = _INT_SCALE / clip
            if stage == 0:  # no reverse residual yet: let scipy add them
                i_sink = np.floor(c_sink * scale).astype(np.int32)
                icap = self.icap0
                icap[self.sink_pos] = i_sink
                self.icap0_fw[self.sink_pos_fw] = i_sink
                graph = self._csr(self.icap0_fw, self.fw_indices, self.fw_indptr)
            else:
                assert r is not None  # set at the end of stage 0
                icap = np.floor(np.minimum(r, clip) * scale).astype(np.int32)
                graph = self._csr(icap, self.indices, self.indptr)
            res = maximum_flow(graph, 0, self.sink)
            flow = res.flow
            if np.array_equal(flow.indptr, self.indptr) and np.array_equal(
                flow.indices, self.indices
            ):
                fint = flow.data
            else:  # pragma: no cover - scipy changed its output structure
                fint = np.asarray(flow[self.rows, self.cols]).ravel()
            total += res.flow_value / scale
            if stage == 0:  # the two trivial cuts: source and sink
                bound = min(self.upper, float(c_sink.sum())) - total
                if bound <= rtol * total:
                    break
            # certificate: the cut around the nodes reachable from the source
            live = icap > fint
            reach = self._csr(
                np.ones(int(live.sum()), dtype=np.int8),
                self.indices[live],
                self._indptr(self.rows[live]),
            )
            reached = np.zeros(self.num_nodes, dtype=bool)
            reached[breadth_first_order(reach, 0, return_predecessors=False)] = True
            crossing = np.flatnonzero(reached[self.rows] & ~reached[self.cols])
            # real residual = r - flow / scale; feasible, so >= 0 up to rounding
            rem = (cap if r is None else r)[crossing] - fint[crossing] / scale
            bound = float(np.maximum(rem, 0.0).sum())
            if bound <= rtol * total or bound == 0.0:
                break
            r = np.maximum((cap if r is None else r) - fint / scale, 0.0)
            clip = bound
        return total, bound


def max_flows_to_inputs(
    mats: np.ndarray, w: np.ndarray, rtol: float = 1e-6
) -> Tuple[np.ndarray, float]:
    """Maximum flow from the output node to every input token of one sample.

    Args:
        mats (numpy.ndarray): ``(L, N, N)`` float64 capacities; ``mats[l][i,
            j]`` is the capacity of the edge from token ``i`` after block
            ``l`` to token ``j`` before it.
        w (numpy.ndarray): ``(N,)`` capacities from the source to the tokens of
            the last layer (the one-hot of the class token for class-token
            models).
        rtol (float, optional): refine until the certified error of each flow
            is at most this fraction of it. Default: 1e-6

    Returns:
        ``(flows, bound)``: ``flows`` ``(N,)`` and the largest certified
        relative error bound over the entries.
    """
    return _solve(_LayeredGraph.dense(mats, w), rtol)


def graph_edges(
    graph: TokenGraph, mats: Dict[int, np.ndarray]
) -> Tuple[List[Edges], List[int]]:
    """The edge sets and level sizes of one sample's flow network on a token
    graph, from the last layer's output down to the input tokens.

    ``mats[l]`` ``(nW, nq, n)`` are layer ``l``'s residual-adjusted
    capacities per window; edges join tokens of the same window (padding
    positions have no node), a merge map joins each new token to the
    tokens it is made from with capacity :math:`P_{ij}` (a token made from
    none, CaiT's class token, has no edge down) and a layer with a query
    subset (CaiT's class attention) passes the other tokens on with
    capacity one.
    """
    stage = len(graph.stages) - 1
    sizes = [graph.stages[stage].num_tokens]
    edges: List[Edges] = []

    def merge_down() -> None:
        nonlocal stage
        m = graph.merges[stage - 1]
        index, weight = m.index.numpy(), m.weight.numpy()
        real = index >= 0
        rows = np.broadcast_to(np.arange(index.shape[0])[:, None], index.shape)
        edges.append((rows[real], index[real], weight[real]))
        stage -= 1
        sizes.append(graph.stages[stage].num_tokens)

    for layer in range(len(graph.layers) - 1, -1, -1):
        lw = graph.layers[layer]
        while stage > lw.stage:
            merge_down()
        index = lw.index.numpy()
        queries = index if lw.queries is None else lw.queries.numpy()[None]
        rows = np.broadcast_to(queries[:, :, None], mats[layer].shape)
        cols = np.broadcast_to(index[:, None, :], mats[layer].shape)
        real = (rows >= 0) & (cols >= 0)
        r, c, cap = rows[real], cols[real], mats[layer][real]
        if lw.queries is not None:  # the other tokens pass unchanged
            rest = np.setdiff1d(np.arange(sizes[-1]), queries)
            r, c = np.concatenate([r, rest]), np.concatenate([c, rest])
            cap = np.concatenate([cap, np.ones(len(rest))])
        edges.append((r, c, cap))
        sizes.append(sizes[-1])
    while stage > 0:
        merge_down()
    return edges, sizes


def _solve(
    graph: _LayeredGraph, rtol: float, tokens: Optional[range] = None
) -> Tuple[np.ndarray, float]:
    """The flows to the input tokens ``tokens`` (all by default) and their
    largest certified relative bound. Each token's flow is computed from the
    graph's fixed capacities alone (:meth:`_LayeredGraph.max_flow` sets every
    entry it changes), so it does not depend on which tokens come before."""
    tokens = range(graph.num_inputs) if tokens is None else tokens
    flows = np.zeros(len(tokens))
    worst = 0.0
    for i, v in enumerate(tokens):
        flows[i], b = graph.max_flow(v, rtol)
        worst = max(worst, b / max(flows[i], 1e-300))
    return flows, worst


#: one sample's flow network: ``(edges, sizes, w)`` of :class:`_LayeredGraph`
Problem = Tuple[List[Edges], List[int], np.ndarray]


def _solve_problem(
    problem: Problem, rtol: float, start: int = 0, stop: Optional[int] = None
) -> Tuple[np.ndarray, float]:
    """The flows to input tokens ``start .. stop - 1`` (all by default) of one
    sample's network, and their largest certified relative bound; a
    module-level function, so that worker processes can run it."""
    edges, sizes, w = problem
    graph = _LayeredGraph(edges, sizes, w)
    return _solve(graph, rtol, range(start, graph.num_inputs if stop is None else stop))


def solve_samples(
    build: Callable[[int], Problem],
    num_samples: int,
    rtol: float,
    processes: int = 1,
) -> List[Tuple[np.ndarray, float]]:
    """The flows of every sample's network (and each sample's largest
    certified relative bound), on ``processes`` processes.

    scipy's :func:`~scipy.sparse.csgraph.maximum_flow` holds the GIL, so
    the work is shared by worker processes
    (:class:`concurrent.futures.ProcessPoolExecutor` with multiprocessing's
    start method, one call's pool). The tasks are samples, or runs of their
    input tokens when the samples do not divide evenly among the processes
    (a single image, 3 images on 2 processes: each sample is cut into
    ``processes / gcd(B, processes)`` runs), so that the workers finish
    together. Each task runs the one-process code on its tokens, and a
    token's flow does not depend on the other tokens: the results are those
    of solving everything here, bit for bit. One process (or a daemonic
    process, which may not have children) solves here.

    Args:
        build (callable): ``build(b)`` is sample ``b``'s network; it is
            called just before the network is solved or sent to a worker, so
            that at most ``2 * processes`` networks exist at a time.
        num_samples (int): the number of samples ``B``.
        rtol (float): the certified relative accuracy of every flow.
        processes (int, optional): the number of processes. Default: 1
    """
    B = num_samples
    if processes <= 1 or multiprocessing.current_process().daemon:
        return [_solve_problem(build(b), rtol) for b in range(B)]
    parts = processes // math.gcd(B, processes)
    context = multiprocessing.get_context(_start_method())
    futures: List[Tuple[int, Future]] = []
    in_flight: set = set()
    with ProcessPoolExecutor(min(processes, B * parts), mp_context=context) as pool:
        for b in range(B):
            problem = build(b)
            n = problem[1][-1]  # the input tokens
            cuts = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
            for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
                while len(in_flight) >= 2 * processes:  # bound the networks held
                    in_flight = wait(in_flight, return_when=FIRST_COMPLETED)[1]
                future = pool.submit(_solve_problem, problem, rtol, lo, hi)
                futures.append((b, future))
                in_flight.add(future)
            del problem
        done = [(b, f.result()) for b, f in futures]
    out = []
    for b in range(B):
        mine = [r for s, r in done if s == b]
        out.append((np.concatenate([f for f, _ in mine]), max(e for _, e in mine)))
    return out


def _start_method() -> str:
    """multiprocessing's start method: the one set, or the platform's default
    (the first of :func:`multiprocessing.get_all_start_methods`), read without
    fixing it (``multiprocessing.get_context()`` would)."""
    method = multiprocessing.get_start_method(allow_none=True)
    return method or multiprocessing.get_all_start_methods()[0]


#: ``processes=None`` starts workers when samples x input tokens x edges
#: reaches this (about 0.3 s of solving; a ViT-S/16 image is 9.2e7): below
#: it, starting them costs more than they save
_PARALLEL_WORK = 1e7


def _default_processes(work: float) -> int:
    """Worker processes when ``processes=None``, for ``work`` samples x input
    tokens x edges: torch's intra-op threads where multiprocessing forks
    (starting a worker is then cheap) and the work is large enough, else 1."""
    if _start_method() != "fork" or work < _PARALLEL_WORK:
        return 1
    return max(1, torch.get_num_threads())


@register_method("attention_flow")
class AttentionFlow(GraphAttribution):
    r"""Attention flow of Abnar & Zuidema (ACL 2020,
    https://arxiv.org/abs/2005.00928), computed exactly.

    The layers form a directed graph with one node per token and layer. Per
    block the heads are fused, the identity is added for the residual
    connection and the rows are renormalised, as in the authors' code
    (github samiraabnar/attention_flow):

    .. math::
        \hat A^{(l)} = \frac{\bar A^{(l)} + I}{\mathrm{rowsum}(\bar A^{(l)} + I)}

    (:math:`\hat A = (\bar A + I)/2` for ``head_fusion="mean"``). Token
    :math:`i` after block :math:`l` is joined to token :math:`j` before it by
    an edge of capacity :math:`\hat A^{(l)}_{ij}`. The score of input token
    :math:`j` is the value of the maximum flow from the output class-token
    node to input node :math:`j`, normalised, as in the authors'
    ``compute_flows``, over all input tokens (prefix tokens included, then
    dropped from the map):

    .. math::
        \phi_j = \frac{\mathrm{maxflow}(\mathrm{cls}^{(L)} \to j^{(0)})}
                      {\sum_k \mathrm{maxflow}(\mathrm{cls}^{(L)} \to k^{(0)})}

    For average-pooled models (no class token), a source node feeds every
    last-layer patch token with capacity :math:`1/N_p` (the pooling weights);
    for distilled DeiT, class and distillation tokens get 1/2 each. The
    result is class-agnostic: ``target`` is ignored.

    **Windowed and hierarchical models** (Swin; ``docs/token_graph.rst``):
    the network is the token graph itself. A windowed layer joins each token
    to the tokens of its window only (so the network has :math:`O(N w^2)`
    edges per layer, not :math:`N^2`), padding positions have no node, a
    patch merging joins each merged token to the tokens it is made from with
    capacity :math:`P_{ij}` (1/4 for Swin's 2x2 merging), the source feeds
    the last stage's tokens with the pooling row, and the flows are computed
    to the first stage's tokens (the map's grid). On a plain ViT this is the
    network above.

    **Exactness.** One maximum-flow problem per input token and sample is
    solved with scipy's compiled Dinic algorithm
    (:func:`scipy.sparse.csgraph.maximum_flow`), which takes int32
    capacities. Capacities (float64) are scaled so that the largest is
    :math:`2^{30}` and floored: the integer maximum flow is then a feasible
    flow of the real network, a lower bound. An upper bound comes from a cut:
    the source and sink cuts, or else the minimum cut of the integer problem
    (the nodes reachable from the source in its residual network), whose
    edges each have a real residual below one unit :math:`2^{-30}`. While
    the certified gap exceeds ``rtol`` times the flow, the real residual
    network (capacities clipped to the gap) is solved again with the scale
    set by the gap, which gains about nine digits per stage. With the default
    ``rtol=1e-6`` one stage usually suffices (observed error at most
    :math:`10^{-7}` relative to networkx on a ViT-S/16 graph); ``rtol=1e-12``
    gives float64 precision (observed :math:`10^{-14}`) at two to three times
    the cost. The largest certified relative bound of the last call is kept
    in ``last_error_bound`` (over the whole call, also when
    ``internal_batch_size`` explains the batch in chunks).

    **Processes.** The traced forward pass and the capacities are batched;
    the maximum flows are shared by ``processes`` worker processes (scipy's
    solver holds the GIL, so threads would take turns): whole samples, or
    runs of input tokens when the samples do not divide evenly among the
    processes (a single image is cut into ``processes`` runs). Each worker
    runs the one-process code on its tokens and a token's flow does not
    depend on the others, so the maps and ``last_error_bound`` are those of
    one process, bit for bit. On a ViT-S/16 with 2 threads, two idle cores
    solve a batch of 8 1.9 times faster per image than one process one image
    at a time (1.93x wall), and a single image about 1.5 times faster
    (``docs/performance.rst``, Attention flow). Putting the samples'
    networks side by side in one disjoint network, one solver call per input
    token for the whole batch, was measured 3 to 7 times slower than one call
    per sample: Dinic's phases then run over every sample's edges as long as
    the slowest sample needs them.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        head_fusion (str, optional): ``"mean"``, ``"max"`` or ``"min"``.
            Default: ``"mean"``
        normalize (bool, optional): divide each sample's flows by their sum
            over the input tokens, as the authors' code does. Default: True
        rtol (float, optional): certified relative accuracy of every maximum
            flow (see above); must be in ``(0, 1)``. Default: 1e-6
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``
        processes (int, optional): worker processes sharing the maximum
            flows of a call (1 solves them in this process, as do calls
            from a daemonic process). ``None``: ``torch.get_num_threads()``
            where multiprocessing's start method is ``"fork"`` (Linux;
            starting a worker is then cheap) and the networks are large
            enough to pay for the workers (samples x input tokens x edges
            at least 1e7: any ViT-S/16 image, not the tiny test models),
            else 1. With other start methods (``"spawn"``, ``"forkserver"``;
            ``multiprocessing.set_start_method``) each call's workers import
            captum_vit first, and the script needs the
            ``if __name__ == "__main__":`` guard. Default: None

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_small_patch16_224").eval()
        >>> flow = cv.AttentionFlow(model)
        >>> attr = flow.attribute(torch.randn(2, 3, 224, 224), output="tokens")
        >>> attr.shape
        torch.Size([2, 14, 14])
    """

    _call_maxima = ("last_error_bound",)

    def __init__(
        self,
        model: nn.Module,
        head_fusion: str = "mean",
        normalize: bool = True,
        rtol: float = 1e-6,
        interpolate_mode: str = "bilinear",
        processes: Optional[int] = None,
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.head_fusion = check_head_fusion(head_fusion)
        self.normalize = bool(normalize)
        if not 0.0 < rtol < 1.0:
            raise ValueError(f"rtol must be in (0, 1), got {rtol}")
        self.rtol = float(rtol)
        if processes is not None and (
            isinstance(processes, bool)
            or not isinstance(processes, numbers.Integral)
            or processes < 1
        ):
            raise ValueError(
                f"processes must be a positive int or None, got {processes!r}"
            )
        self.processes = None if processes is None else int(processes)
        self.last_error_bound = 0.0

    def capacities(self, attentions: Iterable[Tensor]) -> Tensor:
        """Residual-adjusted capacities ``(B, L, N, N)`` (float64) of the graph."""
        mats = []
        for attn in attentions:
            fused = fuse_heads(attn.detach().double(), self.head_fusion)
            a = fused + torch.eye(
                fused.shape[-1], dtype=fused.dtype, device=fused.device
            )
            mats.append(a / a.sum(dim=-1, keepdim=True))
        return torch.stack(mats, dim=1)

    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        graph = self._graph(inputs)
        L = self.adapter.num_layers
        tracer = MixingTracer(
            graph, self.head_fusion, range(L), accumulate=False, dtype=torch.float64
        )
        self._trace(inputs, target, args, tracer)
        # talking heads (CaiT) may mix heads with negative weights: a flow
        # network has no negative capacity (a no-op for softmax attention)
        ops = {layer: m.clamp(min=0).cpu().numpy() for layer, m in tracer.ops.items()}
        B = inputs.shape[0]
        graph = graph.with_pool(tracer.pool_row())  # attention pooling: per sample
        w = pool_row(graph, len(graph.stages) - 1, B, torch.float64).cpu().numpy()

        def build(b: int) -> Problem:
            edges, sizes = graph_edges(graph, {i: m[b] for i, m in ops.items()})
            return edges, sizes, w[b]

        processes = self.processes
        if processes is None:
            edges = sum(m[0].size for m in ops.values())
            processes = _default_processes(B * graph.stages[0].num_tokens * edges)
        solved = solve_samples(build, B, self.rtol, processes)
        flows = np.stack([f for f, _ in solved])
        self.last_error_bound = max(err for _, err in solved)
        if self.normalize:
            flows = flows / np.maximum(flows.sum(axis=1, keepdims=True), 1e-300)
        out = patch_scores(graph, torch.from_numpy(flows))
        return out.to(device=inputs.device, dtype=inputs.dtype)
