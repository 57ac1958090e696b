r"""Statistics of the leaderboard: bootstrap confidence intervals of the mean and
the paired bootstrap comparison of two methods.

Per method and metric column the benchmark has a value per sample and per repeat
seed, an array ``(n, R)``. The statistic is the mean over samples of the
per-sample mean over repeats. The bootstrap resamples both levels: ``n``
samples with replacement and, when ``R > 1``, ``R`` repeats with replacement
(the two-stage bootstrap of hierarchical data, Davison & Hinkley 1997, Sec.
2.4): the interval then covers the variation of the images and of the metric's
random draws. Samples whose value is NaN (undefined: the pointing game on an
empty mask, a misclassified image under ``correct_only``) are left out.

Two methods are compared on the same samples and the same resampled indices
(a *paired* bootstrap of the mean difference): the interval of the difference,
and the two-sided p-value :math:`2 \min(P^*(\Delta \le 0), P^*(\Delta \ge 0))`
of the bootstrap distribution :math:`P^*` (Efron & Tibshirani 1993, Sec.
16.4), floored at :math:`1 / n_{boot}`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np


class Interval(NamedTuple):
    """A bootstrap estimate: the mean, its percentile interval and ``n``."""

    mean: float
    low: float
    high: float
    n: int


class Comparison(NamedTuple):
    """Paired comparison ``a - b`` on the samples both define.

    Attributes:
        diff (float): mean difference.
        low (float): lower end of its interval.
        high (float): upper end.
        p_value (float): two-sided paired-bootstrap p-value (1.0 when the two
            are equal on every sample).
        wins (int): samples where ``a`` is better (direction-aware).
        ties (int): samples where they are equal.
        losses (int): samples where ``a`` is worse.
    """

    diff: float
    low: float
    high: float
    p_value: float
    wins: int
    ties: int
    losses: int


def _rows(values: np.ndarray) -> np.ndarray:
    """``(n, R)`` float64 with NaN repeats filled by their sample's mean (NaN
    where a sample has no finite repeat)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    finite = np.isfinite(v)
    count = finite.sum(axis=1, keepdims=True)
    row = np.where(finite, v, 0.0).sum(axis=1, keepdims=True) / np.maximum(count, 1)
    return np.where(finite, v, np.where(count > 0, row, np.nan))


def _resampled_means(
    v: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``(n_boot,)`` means over resampled samples (and repeats) of ``v (n, R)``."""
    n, R = v.shape
    img = rng.integers(0, n, size=(n_boot, n))
    if R == 1:
        return v[:, 0][img].mean(axis=1)
    rep = rng.integers(0, R, size=(n_boot, R))
    per = v[:, rep].mean(axis=-1)  # (n, n_boot): repeats resampled per draw
    return per[img, np.arange(n_boot)[:, None]].mean(axis=1)


def _interval(boot: np.ndarray, level: float) -> Tuple[float, float]:
    alpha = (1.0 - level) / 2
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_mean(
    values: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: Optional[int] = 0,
) -> Interval:
    r"""Mean over samples (of the mean over repeats) with its percentile
    bootstrap interval.

    Args:
        values (array): ``(n,)`` or ``(n, R)`` per-sample (and per-repeat) values.
        n_boot (int, optional): bootstrap draws. Default: 2000
        level (float, optional): coverage of the interval. Default: 0.95
        seed (int, optional): seed of the resampling. Default: 0

    Returns:
        Interval: ``mean``, ``low``, ``high`` (NaN without a finite sample)
        and ``n``, the samples used.
    """
    v = _rows(values)
    v = v[np.isfinite(v).all(axis=1)]
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(v.mean(axis=1).mean())
    low, high = _interval(
        _resampled_means(v, n_boot, np.random.default_rng(seed)), level
    )
    return Interval(mean, low, high, len(v))


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    higher_is_better: bool = True,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: Optional[int] = 0,
) -> Comparison:
    r"""Paired bootstrap of the mean difference ``a - b`` over the samples where
    both are finite (same resampled samples and repeats for both).

    Args:
        a (array): ``(n,)`` or ``(n, R)`` values of one method.
        b (array): the same samples for the other method.
        higher_is_better (bool, optional): the column's direction (for the
            win / tie / loss counts). Default: True
        n_boot (int, optional): bootstrap draws. Default: 2000
        level (float, optional): coverage of the interval. Default: 0.95
        seed (int, optional): seed of the resampling. Default: 0

    Returns:
        Comparison
    """
    va, vb = _rows(a), _rows(b)
    if va.shape != vb.shape:
        raise ValueError(f"a and b differ in shape: {va.shape} vs {vb.shape}")
    keep = np.isfinite(va).all(axis=1) & np.isfinite(vb).all(axis=1)
    d = va[keep] - vb[keep]
    if len(d) == 0:
        nan = float("nan")
        return Comparison(nan, nan, nan, nan, 0, 0, 0)
    per = d.mean(axis=1)
    sign = per if higher_is_better else -per
    wins, losses = int((sign > 0).sum()), int((sign < 0).sum())
    ties = len(per) - wins - losses
    diff = float(per.mean())
    if np.all(d == 0):
        return Comparison(diff, 0.0, 0.0, 1.0, wins, ties, losses)
    boot = _resampled_means(d, n_boot, np.random.default_rng(seed))
    low, high = _interval(boot, level)
    p = 2.0 * min(float((boot <= 0).mean()), float((boot >= 0).mean()))
    p = min(1.0, max(p, 1.0 / n_boot))
    return Comparison(diff, low, high, p, wins, ties, losses)
