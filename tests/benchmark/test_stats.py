"""The leaderboard's statistics: the two-level bootstrap against a direct
re-implementation, the paired comparison, and their edge cases."""

import numpy as np
import pytest

from captum_vit.benchmark import bootstrap_mean, paired_bootstrap
from captum_vit.benchmark._stats import _resampled_means


def naive_boot(values, n_boot, seed):
    """Resample samples, then (R > 1) repeats, one draw at a time, with the
    same generator calls as the vectorised version."""
    rng = np.random.default_rng(seed)
    n, R = values.shape
    img = rng.integers(0, n, size=(n_boot, n))
    rep = rng.integers(0, R, size=(n_boot, R)) if R > 1 else None
    out = []
    for b in range(n_boot):
        reps = rep[b] if rep is not None else [0]
        out.append(np.mean([np.mean([values[i, r] for r in reps]) for i in img[b]]))
    return np.array(out)


@pytest.mark.parametrize("R", [1, 3])
def test_resampling_equals_the_direct_two_level_bootstrap(R):
    v = np.random.default_rng(0).normal(size=(7, R))
    got = _resampled_means(v, 50, np.random.default_rng(4))
    np.testing.assert_allclose(got, naive_boot(v, 50, 4))


def test_bootstrap_mean_interval_and_nan():
    rng = np.random.default_rng(1)
    v = rng.normal(2.0, 1.0, size=400)
    iv = bootstrap_mean(v, n_boot=4000, seed=0)
    assert iv.mean == pytest.approx(v.mean())
    se = v.std(ddof=1) / np.sqrt(len(v))
    assert iv.low == pytest.approx(v.mean() - 1.96 * se, abs=0.25 * se)
    assert iv.high == pytest.approx(v.mean() + 1.96 * se, abs=0.25 * se)
    assert iv.n == 400
    w = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, 5.0]])
    iv = bootstrap_mean(w)  # sample 1 left out, sample 0's NaN repeat filled
    assert iv.n == 2 and iv.mean == pytest.approx((1.0 + 4.0) / 2)
    assert np.isnan(bootstrap_mean(np.full(3, np.nan)).mean)
    c = bootstrap_mean(np.full(5, 0.25))
    assert (c.low, c.mean, c.high) == (0.25, 0.25, 0.25)


def test_paired_bootstrap_directions_and_counts():
    rng = np.random.default_rng(2)
    b = rng.normal(size=200)
    a = b + 0.3 + 0.1 * rng.normal(size=200)  # a clearly higher, paired
    cmp = paired_bootstrap(a, b, higher_is_better=True)
    assert cmp.diff == pytest.approx(np.mean(a - b))
    assert cmp.low > 0 and cmp.p_value == pytest.approx(1 / 2000)
    assert (cmp.wins, cmp.ties, cmp.losses) == (
        int(np.sum(a > b)),
        int(np.sum(a == b)),
        int(np.sum(a < b)),
    )
    lower = paired_bootstrap(a, b, higher_is_better=False)
    assert (lower.wins, lower.losses) == (cmp.losses, cmp.wins)
    same = paired_bootstrap(b, b)
    assert (same.diff, same.p_value, same.ties) == (0.0, 1.0, 200)
    noise = paired_bootstrap(rng.normal(size=200), rng.normal(size=200))
    assert noise.p_value > 0.01
    x = np.array([1.0, np.nan, 2.0])
    y = np.array([0.0, 5.0, np.nan])
    assert paired_bootstrap(x, y).wins == 1  # only sample 0 is shared
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
