"""ViT-appropriate perturbation functions for :func:`captum.metrics.infidelity` and
:func:`captum.metrics.sensitivity_max`.

Pixel-level noise is what Captum's defaults draw; a ViT sees its input as patches, so
these factories perturb whole ``patch_size x patch_size`` patches: one noise value per
patch and channel, or a random set of patches replaced by a baseline.

Each factory returns a function in the form the chosen Captum metric expects:

* ``metric="infidelity"``: ``perturb_func(inputs, baselines=None)`` returning
  ``(perturbations, perturbed_inputs)`` with ``perturbed = inputs - perturbations``.
* ``metric="sensitivity"``: ``perturb_func(inputs, perturb_radius=0.02)`` returning
  ``perturbed_inputs``.

Inputs may be a tensor or a tuple of tensors (Captum passes either); every tensor must
be ``(N, C, H, W)`` with ``H`` and ``W`` multiples of ``patch_size``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._maps import tokens_to_pixels
from ._utils import BaselineType, _generator, _grid_size, _resolve_baseline

Inputs = Union[Tensor, Tuple[Tensor, ...]]


def _check_metric(metric: str) -> None:
    if metric not in ("infidelity", "sensitivity"):
        raise ValueError(
            f"metric must be 'infidelity' or 'sensitivity', got {metric!r}"
        )


def _patch_field(
    x: Tensor,
    patch_size: int,
    draw: Callable[[Tuple[int, ...]], Tensor],
    per_channel: bool,
) -> Tensor:
    """Draw one value per patch (and channel), expanded to pixels, like ``x``."""
    if x.dim() != 4:
        raise ValueError(
            f"patch perturbations need (N, C, H, W) inputs, got {tuple(x.shape)}"
        )
    N, C, H, W = x.shape
    gh, gw = _grid_size((H, W), patch_size)
    field = draw((N * (C if per_channel else 1), gh, gw))
    field = tokens_to_pixels(field, (H, W), patch_size, mode="nearest").reshape(
        N, C if per_channel else 1, H, W
    )
    return field.to(
        device=x.device, dtype=x.dtype if field.is_floating_point() else field.dtype
    )


def _map(inputs: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    if isinstance(inputs, tuple):
        return tuple(fn(x) for x in inputs)
    return fn(inputs)


def patch_noise_perturb_func(
    patch_size: int,
    std: float = 0.1,
    metric: str = "infidelity",
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Callable:
    r"""Patch-level noise for :func:`captum.metrics.infidelity` /
    :func:`captum.metrics.sensitivity_max`.

    Infidelity (Yeh et al. 2019, https://arxiv.org/abs/1901.09392) with patch noise
    :math:`I`, constant over each patch and channel:

    .. math::

        I_{n,c,p} \sim \mathcal{N}(0, \sigma^2), \qquad
        \mathrm{INFD} = \mathbb{E}_I\Big[\big(I^\top \Phi(f, x)
        - (f(x) - f(x - I))\big)^2\Big]

    (lower is better). For ``metric="sensitivity"`` (max-sensitivity, Yeh et al.
    2019; lower is better) each patch and channel is shifted by a value drawn
    uniformly from :math:`[-r, r]`, :math:`r` the ``perturb_radius`` Captum passes
    (``std`` is then unused) — Captum's default L-infinity ball, patch-wise.

    Args:

        patch_size (int): side of the model's patches.
        std (float, optional): standard deviation of the Gaussian patch noise
            (infidelity). Default: 0.1
        metric (str, optional): ``"infidelity"`` or ``"sensitivity"``: the form of
            the returned function. Default: ``"infidelity"``
        seed (int, optional): seed of a private generator: repeated runs draw the
            same sequence of perturbations. Default: None
        generator (torch.Generator, optional): generator to draw from (instead of
            ``seed``). Default: None

    Returns:
        Callable: the perturbation function.

    Examples::

        >>> import torch
        >>> from captum.metrics import infidelity
        >>> from captum_vit.metrics import patch_noise_perturb_func
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x, attr = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
        >>> f = patch_noise_perturb_func(patch_size=2, std=0.1, seed=0)
        >>> infidelity(model, f, x, attr, target=0, n_perturb_samples=4).shape
        torch.Size([2])
    """
    _check_metric(metric)
    _grid_size((patch_size, patch_size), patch_size)
    gen = _generator(seed, generator)

    if metric == "infidelity":

        def perturb_func(
            inputs: Inputs, baselines: Any = None
        ) -> Tuple[Inputs, Inputs]:
            def one(x: Tensor) -> Tuple[Tensor, Tensor]:
                noise = _patch_field(
                    x,
                    patch_size,
                    lambda shape: torch.randn(shape, generator=gen) * std,
                    True,
                )
                return noise, x - noise

            if isinstance(inputs, tuple):
                pairs = [one(x) for x in inputs]
                return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
            return one(inputs)

        return perturb_func

    def perturb_func_s(inputs: Inputs, perturb_radius: float = 0.02) -> Inputs:
        def one(x: Tensor) -> Tensor:
            noise = _patch_field(
                x,
                patch_size,
                lambda shape: (
                    (torch.rand(shape, generator=gen) * 2 - 1) * perturb_radius
                ),
                True,
            )
            return x + noise

        return _map(inputs, one)

    return perturb_func_s


def patch_baseline_perturb_func(
    patch_size: int,
    fraction: float = 0.25,
    baseline: BaselineType = 0.0,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    metric: str = "infidelity",
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Callable:
    r"""Patch-to-baseline perturbation for :func:`captum.metrics.infidelity` /
    :func:`captum.metrics.sensitivity_max`.

    Each patch is independently replaced by the baseline with probability
    ``fraction`` (a random token-removal, the perturbation a ViT can make sense of).
    For infidelity the perturbation is :math:`I = M \odot (x - \bar x)` with
    :math:`M` the upsampled Bernoulli patch mask, so that :math:`x - I` is the
    perturbed image and

    .. math::

        \mathrm{INFD} = \mathbb{E}_M\Big[\big(\textstyle\sum_i M_i (x_i - \bar x_i)
        \Phi_i - (f(x) - f(x_{[M = \bar x]}))\big)^2\Big]

    (lower is better). When Captum passes ``baselines`` (``infidelity(...,
    baselines=...)``) they replace ``baseline``. For ``metric="sensitivity"`` the
    function returns the perturbed image (``perturb_radius`` is not used).

    Args:

        patch_size (int): side of the model's patches.
        fraction (float, optional): probability that a patch is replaced.
            Default: 0.25
        baseline (str, float or Tensor, optional): replacement value: a number, a
            tensor broadcastable to the inputs, or ``"black"`` / ``"zero"`` /
            ``"mean"`` / ``"blur"``. Default: 0.0
        mean (sequence of float, optional): normalisation mean, for ``"black"``.
            Default: None
        std (sequence of float, optional): normalisation std, for ``"black"``.
            Default: None
        metric (str, optional): ``"infidelity"`` or ``"sensitivity"``.
            Default: ``"infidelity"``
        seed (int, optional): seed of a private generator. Default: None
        generator (torch.Generator, optional): generator (instead of ``seed``).
            Default: None

    Returns:
        Callable: the perturbation function.

    Examples::

        >>> import torch
        >>> from captum.metrics import infidelity
        >>> from captum_vit.metrics import patch_baseline_perturb_func
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x, attr = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
        >>> f = patch_baseline_perturb_func(patch_size=2, fraction=0.5, seed=0)
        >>> infidelity(model, f, x, attr, target=0, n_perturb_samples=4).shape
        torch.Size([2])
    """
    _check_metric(metric)
    _grid_size((patch_size, patch_size), patch_size)
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    gen = _generator(seed, generator)

    def replace(x: Tensor, b: Optional[BaselineType]) -> Tensor:
        mask = _patch_field(
            x,
            patch_size,
            lambda shape: torch.rand(shape, generator=gen) < fraction,
            False,
        )
        fill = _resolve_baseline(baseline if b is None else b, x, mean, std)
        return torch.where(mask, fill, x)

    if metric == "infidelity":

        def perturb_func(
            inputs: Inputs, baselines: Any = None
        ) -> Tuple[Inputs, Inputs]:
            if isinstance(inputs, tuple):
                bs = (
                    baselines
                    if isinstance(baselines, tuple)
                    else (baselines,) * len(inputs)
                )
                perts = tuple(replace(x, b) for x, b in zip(inputs, bs))
                return tuple(x - p for x, p in zip(inputs, perts)), perts
            pert = replace(inputs, baselines)
            return inputs - pert, pert

        return perturb_func

    def perturb_func_s(inputs: Inputs) -> Inputs:
        return _map(inputs, lambda x: replace(x, None))

    return perturb_func_s
