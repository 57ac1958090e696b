"""ROAD: RemOve And Debias (Rong et al., ICML 2022), with noisy linear imputation."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .._targets import TargetType
from ._docs import shared_args
from ._utils import _generator, _to_pixel_map
from .faithfulness import _Explained, _Run, _setup

#: ``(row offset, column offset, weight)`` of the 8 neighbours in the imputation:
#: a removed pixel is the weighted mean of its neighbours (Rong et al., Eq. 4).
NEIGHBOURS: Tuple[Tuple[int, int, float], ...] = (
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)

#: The removal fractions of the ROAD curves: pytorch-grad-cam's percentiles
#: 10, ..., 90 (fraction = 1 - percentile / 100), in its order, which is the
#: order the noise is drawn in.
ROAD_FRACTIONS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


class ROADResult(NamedTuple):
    r"""Result of :func:`road`.

    Attributes:
        change (Tensor): ``(B,)`` the mean of :attr:`curve` over the fractions
            (pytorch-grad-cam's ``ROAD...Average``).
        curve (Tensor): ``(B, S)`` the change of the target score,
            :math:`f_t(\tilde x) - f_t(x)`, after imputing each fraction.
        fractions (Tensor): ``(S,)`` the fractions of the pixels removed.
    """

    change: Tensor
    curve: Tensor
    fractions: Tensor


def _linear_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The noise-free imputation of the ``removed`` pixels of one image.

    ``image`` is ``(C, H, W)``, ``removed`` ``(H, W)`` bool; returns the ``(M, C)``
    values of the removed pixels in row-major order, solving the sparse system
    ``v_p = sum_q w_q v_q / sum_q w_q`` over the in-image neighbours ``q`` of each
    removed pixel ``p`` (known neighbours move to the right-hand side) with
    SciPy's sparse LU (:func:`scipy.sparse.linalg.splu`, SuperLU, as grad-cam's
    ``spsolve``). The matrix is symmetric and diagonally dominant, so SuperLU's
    symmetric mode (minimum-degree ordering of :math:`A + A^T`, no pivoting)
    applies: 25% faster on the leaderboard's maps than ``spsolve``'s default
    ordering, the same solution within 3e-14.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    C, H, W = image.shape
    flat = removed.reshape(-1)
    unknown = np.flatnonzero(flat)
    M = unknown.size
    if M == H * W:  # nothing to impute from: the homogeneous system's 0
        return np.zeros((M, C))
    variable = np.full(H * W, -1)
    variable[unknown] = np.arange(M)
    values = image.reshape(C, -1).astype(np.float64)
    r, c = np.divmod(unknown, W)
    rows, cols, weights = [], [], []
    diagonal = np.zeros(M)
    rhs = np.zeros((M, C))
    for dr, dc, w in NEIGHBOURS:
        rr, cc = r + dr, c + dc
        inside = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        eq = np.flatnonzero(inside)
        diagonal[eq] -= w
        q = rr[inside] * W + cc[inside]
        missing = flat[q]
        rows.append(eq[missing])
        cols.append(variable[q[missing]])
        weights.append(np.full(int(missing.sum()), w))
        rhs[eq[~missing]] -= w * values[:, q[~missing]].T
    rows.append(np.arange(M))
    cols.append(np.arange(M))
    weights.append(diagonal)
    A = coo_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
        shape=(M, M),
    ).tocsc()
    lu = splu(
        A,
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    return np.asarray(lu.solve(rhs)).reshape(M, C)


def _removed(amap: np.ndarray, fraction: float, order: str) -> np.ndarray:
    """pytorch-grad-cam's rule: the pixels at or above the ``100 (1 - fraction)``
    percentile (numpy's linear interpolation) of the map (MoRF) or of one minus
    the map (LeRF)."""
    values = amap if order == "morf" else 1 - amap
    threshold = np.percentile(values, round(100.0 - 100.0 * fraction, 9))
    return ~(values < threshold)


@shared_args
def road(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    order: str = "morf",
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = 0.01,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    apply_softmax: bool = True,
    additional_forward_args: Any = None,
    internal_batch_size: Optional[int] = None,
    show_progress: bool = False,
) -> ROADResult:
    r"""ROAD, RemOve And Debias, of Rong, Leemann, Borisov, Kasneci and Kasneci
    (2022), "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods", ICML, https://arxiv.org/abs/2202.00449.

    A fraction :math:`\alpha` of the pixels, most relevant first (``"morf"``) or
    least relevant first (``"lerf"``), is removed and **imputed** from its
    neighbours instead of set to a constant, so that the removal's shape does not
    leak the map to the model. Each removed pixel :math:`p` takes the weighted mean
    of its 8 in-image neighbours :math:`\mathcal N(p)` (weight :math:`1/6` for the
    4 direct and :math:`1/12` for the 4 diagonal ones), solved jointly for all
    removed pixels per channel as one sparse linear system (SciPy's SuperLU,
    :func:`scipy.sparse.linalg.splu`), plus Gaussian noise:

    .. math::

        \tilde x_p = \frac{\sum_{q \in \mathcal N(p)} w_q \tilde x_q}
        {\sum_{q \in \mathcal N(p)} w_q} \;\; (p \text{ removed}), \qquad
        \tilde x_p \leftarrow \tilde x_p + \sigma \epsilon_p, \;\;
        \epsilon_p \sim \mathcal N(0, 1),

    with :math:`\tilde x_q = x_q` for the kept pixels. The curve is the change of
    the target score :math:`f_t(\tilde x^{(\alpha)}) - f_t(x)` for each
    :math:`\alpha`, and ``change`` its mean over the fractions. **MoRF: lower is
    better** (removing the relevant pixels should hurt); **LeRF: higher is
    better**.

    The removed set follows pytorch-grad-cam's ``ROADMostRelevantFirst(p)`` /
    ``ROADLeastRelevantFirst(p)`` with :math:`p = 100(1 - \alpha)`: the pixels
    whose map value (MoRF) or one minus it (LeRF) is at or above
    ``numpy.percentile(·, p)``, so ties at the threshold are all removed. On the
    same inputs, map, target score and seed (``torch.manual_seed(seed)`` before
    the grad-cam call, ``seed`` here; the noise is drawn in its order: fraction by
    fraction, image by image) this function returns pytorch-grad-cam 1.5.7's
    values: on the reference data of ``tests/metrics/data/road_reference.npz``
    (``make_road_reference.py``: a small CNN, 16 x 16 and 20 x 12 images, three
    maps with and without ties, every percentile 10..90, both orders, softmax and
    raw scores, with and without noise) the imputed images agree within 2.4e-7
    (float32 rounding; the sparse systems are the same, grad-cam assembles its
    right-hand side in float32) and the 360 score changes within 3.0e-8, at most
    5.2e-6 of the largest change of their curve. The grad-cam ``ROADCombined`` value is
    :math:`(\text{LeRF} - \text{MoRF}) / 2` with LeRF computed first on the same
    generator, as the ``"road"`` metric of the registry does.

    Rong et al. plot the accuracy; like pytorch-grad-cam this function returns
    the score change per image (``apply_softmax=True``: the softmax probability,
    grad-cam's ``ClassifierOutputSoftmaxTarget``; ``False``: the raw output,
    ``ClassifierOutputTarget``). The imputation works on pixels in the model's
    input space; token grids are upsampled bilinearly first.

    Args:

        {model_args}
        {target}
        order (str, optional): ``"morf"`` (most relevant first) or ``"lerf"``
            (least relevant first). Default: ``"morf"``
        fractions (sequence of float, optional): fractions of the pixels removed,
            in (0, 1), in the order the noise is drawn. Default: 0.9, 0.8, ...,
            0.1 (grad-cam's percentiles 10, 20, ..., 90)
        noise (float, optional): :math:`\sigma`, the standard deviation of the
            noise added to the imputed pixels (Rong et al.'s 0.01). Default: 0.01
        seed (int, optional): seed of the noise. Default: None
        generator (torch.Generator, optional): generator of the noise (instead of
            ``seed``). Default: None (the global generator, as grad-cam)
        apply_softmax (bool, optional): score the softmax probability of the
            target; ``False`` the raw output. Default: True
        {run_args}

    Returns:
        :class:`ROADResult`: ``change`` ``(B,)``, ``curve`` ``(B, S)``,
        ``fractions`` ``(S,)``.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import road
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x, attr = torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4)
        >>> res = road(model, x, attr, target=0, order="lerf", seed=0)
        >>> res.curve.shape
        torch.Size([2, 9])
    """
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    fracs = [float(f) for f in fractions]
    if not fracs or any(not 0.0 < f < 1.0 for f in fracs):
        raise ValueError(f"fractions must lie in (0, 1), got {fracs!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    explained = _Explained(forward_func, inputs, attributions, target)
    run = _Run(additional_forward_args, internal_batch_size, show_progress)
    setup = _setup(explained, baseline="zero", patch_size=None, run=run)
    gen = _generator(seed, generator)
    B, C, H, W = setup.inputs.shape
    S = len(fracs)
    score, base = setup.class_score(apply_softmax)
    maps = _to_pixel_map(attributions, (H, W), B).cpu().numpy()
    images = setup.inputs.detach().cpu()

    def build(idx: Tensor) -> Tensor:  # copy s * B + b: fraction-major order
        out = []
        for k in idx.tolist():
            s, b = divmod(k, B)
            removed = _removed(maps[b], fracs[s], order)
            image = images[b].clone()
            solution = torch.from_numpy(
                _linear_imputation(image.numpy(), removed).T
            ).to(image.dtype)  # (C, M)
            if noise:
                solution = solution + noise * torch.randn(
                    solution.shape, generator=gen, dtype=solution.dtype
                )
            where = torch.from_numpy(np.flatnonzero(removed))
            image.reshape(C, -1)[:, where] = solution
            out.append(image)
        return torch.stack(out).to(setup.inputs.device)

    values = setup._chunks(
        n_total=S * B,
        build=build,
        rows_of=lambda idx: idx % B,
        reduce=score,
        desc=f"ROAD ({order})",
    )
    curve = values.reshape(S, B).t() - base[:, None]
    frac_t = torch.tensor(fracs, device=curve.device)
    return ROADResult(curve.mean(dim=1), curve, frac_t)
