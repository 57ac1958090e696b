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
from ._docs import shared_args
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


def _generator_for(
    metric: str,
    patch_size: int,
    seed: Optional[int],
    generator: Optional[torch.Generator],
) -> Optional[torch.Generator]:
    """Check a factory's ``metric`` and ``patch_size``; the generator it draws from."""
    _check_metric(metric)
    _grid_size((patch_size, patch_size), patch_size)
    return _generator(seed, generator)


def _sensitivity_form(
    fn: Callable[[Tensor, float], Tensor],
) -> Callable[..., Inputs]:
    """``perturb_func(inputs, perturb_radius=0.02)`` (Captum's ``sensitivity_max``
    form) applying ``fn(x, perturb_radius)`` to each input tensor."""

    def perturb_func(inputs: Inputs, perturb_radius: float = 0.02) -> Inputs:
        if isinstance(inputs, tuple):
            return tuple(fn(x, perturb_radius) for x in inputs)
        return fn(inputs, perturb_radius)

    return perturb_func


def _infidelity_form(
    fn: Callable[[Tensor, Any], Tuple[Tensor, Tensor]],
) -> Callable[..., Tuple[Inputs, Inputs]]:
    """``perturb_func(inputs, baselines=None)`` (Captum's ``infidelity`` form)
    applying ``fn(x, baseline) -> (perturbation, perturbed)`` to each input tensor;
    a single ``baselines`` serves every tensor of a tuple."""

    def perturb_func(inputs: Inputs, baselines: Any = None) -> Tuple[Inputs, Inputs]:
        if not isinstance(inputs, tuple):
            return fn(inputs, baselines)
        if not isinstance(baselines, tuple):
            baselines = (baselines,) * len(inputs)
        pairs = [fn(x, b) for x, b in zip(inputs, baselines)]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)

    return perturb_func


@shared_args
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
        {perturb_seed}

    Returns:
        Callable: ``perturb_func(inputs, baselines)`` returning ``(noise, inputs -
        noise)`` (infidelity), or ``perturb_func(inputs, perturb_radius)``
        returning the noisy inputs (sensitivity).

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
    gen = _generator_for(metric, patch_size, seed, generator)

    def noise(x: Tensor, scale: float, uniform: bool) -> Tensor:
        """Gaussian (``std`` ``scale``) or uniform (in ``[-scale, scale]``) noise,
        constant over each patch and channel."""

        def draw(shape: Tuple[int, ...]) -> Tensor:
            if uniform:
                return (torch.rand(shape, generator=gen) * 2 - 1) * scale
            return torch.randn(shape, generator=gen) * scale

        return _patch_field(x, patch_size, draw, True)

    if metric == "infidelity":

        def infidelity_one(x: Tensor, baseline: Any) -> Tuple[Tensor, Tensor]:
            perturbation = noise(x, std, uniform=False)
            return perturbation, x - perturbation

        return _infidelity_form(infidelity_one)
    return _sensitivity_form(lambda x, radius: x + noise(x, radius, uniform=True))


@shared_args
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
        {perturb_seed}

    Returns:
        Callable: ``perturb_func(inputs, baselines)`` returning ``(inputs -
        perturbed, perturbed)`` (infidelity), or ``perturb_func(inputs,
        perturb_radius)`` returning the perturbed inputs (sensitivity).

    Examples::

        >>> import torch
        >>> from captum.attr import Saliency
        >>> from captum.metrics import sensitivity_max
        >>> from captum_vit.metrics import patch_baseline_perturb_func
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> f = patch_baseline_perturb_func(2, fraction=0.5, metric="sensitivity")
        >>> sensitivity_max(Saliency(model).attribute, torch.randn(2, 3, 4, 4),
        ...                 perturb_func=f, target=0, n_perturb_samples=4).shape
        torch.Size([2])
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    gen = _generator_for(metric, patch_size, seed, generator)

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

        def infidelity_one(
            x: Tensor, b: Optional[BaselineType]
        ) -> Tuple[Tensor, Tensor]:
            perturbed = replace(x, b)
            return x - perturbed, perturbed

        return _infidelity_form(infidelity_one)
    return _sensitivity_form(lambda x, radius: replace(x, None))
