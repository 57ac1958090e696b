"""Float comparisons that hold on every CPU.

Two float32 computations of one map that run their operations in a different
order (batched vs single matmuls, fused vs unfused attention, our code vs a
naive re-implementation, another model family) round differently, and how
differently depends on the CPU (vector width, BLAS kernels, thread count).
The difference is proportional to the scale of the map — amplified by
divisions in LRP rules and by differences of forward passes — not to each
element, so an elementwise ``atol=1e-7`` fails on near-zero elements of a map
whose maximum is 1 (issue 12: 3.65e-6 on another x86 machine, 4e-16 in
float64). So such comparisons are made per sample relative to the map's
scale, ``max|actual - expected| / max|expected| <= rtol``, with rtol at least

* 1e-5 for forward-only maps (attention probabilities, rollout),
* 1e-4 for gradient, relevance and iterated maps,
* 1e-3 for differences of forward passes (perturbation methods),

a hundred times the float32 rounding seen between CPUs and still far below
what a wrong formula changes (1e-2 and more). Tight checks stay where rounding
cannot differ: float64 comparisons, and identical computations (same inputs,
same batch, same code), which are bit-identical on any one machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def rel_err(ours: Any, expected: Any) -> np.ndarray:
    """Per sample (first dimension) ``max|ours - expected| / max|expected|``,
    in float64; 0 where both are all zero, inf where only ``expected`` is."""
    ours, expected = (
        np.asarray(t.detach().cpu() if torch.is_tensor(t) else t, dtype=np.float64)
        for t in (ours, expected)
    )
    ours = ours.reshape(len(expected), -1)
    expected = expected.reshape(len(expected), -1)
    diff = np.abs(ours - expected).max(1)
    scale = np.abs(expected).max(1)
    out = np.where(diff == 0, 0.0, np.inf)
    return np.divide(diff, scale, out=out, where=scale > 0)


def assert_close_to_scale(actual: Any, expected: Any, rtol: float) -> None:
    """Assert equal shapes and, per sample (first dimension; a tensor of
    fewer than two dimensions is one sample),
    ``max|actual - expected| <= rtol * max|expected|``."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.ndim < 2:
        actual, expected = actual[None], expected[None]
    err = rel_err(actual, expected)
    assert (err <= rtol).all(), (
        f"max|actual - expected| / max|expected| per sample: {err} > {rtol}"
    )
