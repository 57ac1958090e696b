"""Salience-guided Faithfulness Coefficient (SaCo) of Wu et al. (CVPR 2024)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor

from .._targets import TargetType
from ._docs import shared_args
from ._utils import BaselineType, _ranks
from .faithfulness import _Explained, _Run, _setup


class SaCoResult(NamedTuple):
    r"""Result of :func:`saco`.

    Attributes:
        coefficient (Tensor): ``(B,)`` the faithfulness coefficient :math:`F` in
            :math:`[-1, 1]` (NaN where every group has the same salience).
        salience (Tensor): ``(B, K)`` :math:`s(G_k)`, the summed attribution of each
            group, most salient group first.
        prediction_change (Tensor): ``(B, K)`` :math:`\nabla\mathrm{pred}(x, G_k)`,
            the drop of the target score when group :math:`k` alone is perturbed.
    """

    coefficient: Tensor
    salience: Tensor
    prediction_change: Tensor


def _coefficient(salience: Tensor, change: Tensor) -> Tensor:
    """``(B,)`` SaCo from ``(B, K)`` group salience (descending) and changes."""
    s, d = salience.double(), change.double()
    K = s.shape[1]
    i, j = torch.triu_indices(K, K, offset=1, device=s.device)
    sign = torch.where(d[:, i] >= d[:, j], 1.0, -1.0).to(s.dtype)
    weight = sign * (s[:, i] - s[:, j])
    total = weight.abs().sum(dim=1)
    return torch.where(total > 0, weight.sum(dim=1) / total, torch.nan).float()


@shared_args
def saco(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    n_groups: int = 10,
    baseline: BaselineType = "mean",
    patch_size: Optional[int] = None,
    apply_softmax: bool = True,
    additional_forward_args: Any = None,
    internal_batch_size: Optional[int] = None,
    show_progress: bool = False,
) -> SaCoResult:
    r"""Salience-guided Faithfulness Coefficient of Wu, Kang, Tang, Hong and Yan
    (2024), "On the Faithfulness of Vision Transformer Explanations", CVPR,
    https://arxiv.org/abs/2404.01415 (authors' pseudo-code:
    https://github.com/adreamwu/SaCo).

    The features (pixels, or patches with ``patch_size``) are ranked by their
    attribution and cut into :math:`K` equally large groups
    :math:`G_1, \dots, G_K`, :math:`G_1` the most salient; feature of rank
    :math:`r` (0-based) of :math:`N` lies in group :math:`\lfloor rK/N \rfloor + 1`.
    Each group **alone** is replaced by the baseline (the per-image mean, as the
    paper), giving the prediction change
    :math:`\nabla\mathrm{pred}(x, G_k) = p_t(x) - p_t(x_{[G_k = \bar x]})`.
    Every pair :math:`i < j` (so :math:`s(G_i) \ge s(G_j)`, with
    :math:`s(G) = \sum_{p \in G} a_p`) should have
    :math:`\nabla\mathrm{pred}(x, G_i) \ge \nabla\mathrm{pred}(x, G_j)`; a pair
    that does adds its salience gap, a pair that does not subtracts it:

    .. math::

        w_{ij} = \begin{cases} s(G_i) - s(G_j) & \nabla\mathrm{pred}(x, G_i)
        \ge \nabla\mathrm{pred}(x, G_j) \\ -\big(s(G_i) - s(G_j)\big) &
        \text{otherwise} \end{cases}, \qquad
        F = \frac{\sum_{i<j} w_{ij}}{\sum_{i<j} |w_{ij}|} \in [-1, 1].

    **Higher is better.** Unlike the cumulative deletion curves, the groups are
    perturbed one at a time and the salience *values* (not only their order)
    weigh each pair, so a random map scores about 0 (Wu et al., Table 1).

    Choices where the paper leaves room: when :math:`K` does not divide
    :math:`N` the groups differ in size by one feature; a larger group then has
    more salience and removes more, which biases :math:`F` upwards (measured: a
    random map on 64 features scores 0.07 with :math:`K = 10`, 0.01 with
    :math:`K = 8`): negligible on pixel maps, choose :math:`K` dividing the
    number of patches with ``patch_size``. The paper explains the predicted class
    :math:`\hat y`; here ``target`` (``None`` = predicted). Ties in the
    attribution are broken by feature index (stable sort). Ties in the
    prediction change count as agreeing (the pseudo-code's ``>=``). A constant
    map ranks nothing (its groups would differ only by their sizes) and every
    :math:`w_{ij} = 0` makes the ratio undefined (the authors' code raises):
    this function returns NaN for such an image.

    Args:

        forward_func (Callable): model mapping ``(N, C, H, W)`` to
            ``(N, num_classes)``.
        inputs (Tensor): ``(B, C, H, W)`` images in the model's input space.
        attributions (Tensor): any Captum layout or a token grid; channels summed,
            token grids upsampled bilinearly for pixel groups.
        {target}
        n_groups (int, optional): :math:`K`, the number of groups; the paper's
            value is 10. Default: 10
        baseline (str, float or Tensor, optional): value of a perturbed group:
            ``"mean"`` (per-image, per-channel mean, the paper), ``"zero"``,
            ``"blur"``, ``"black"``, a number or a tensor. Default: ``"mean"``
        patch_size (int, optional): group whole patches (ranked by their summed
            attribution) instead of pixels. Default: None (pixels, the paper)
        apply_softmax (bool, optional): :math:`p_t` is the softmax probability of
            the target (the paper); ``False`` uses the raw output. Default: True
        {run_args}

    Returns:
        :class:`SaCoResult`: ``coefficient`` ``(B,)``, ``salience`` ``(B, K)`` and
        ``prediction_change`` ``(B, K)``.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import saco
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x, attr = torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4)
        >>> saco(model, x, attr, target=0).coefficient.shape
        torch.Size([2])
    """
    explained = _Explained(forward_func, inputs, attributions, target)
    run = _Run(additional_forward_args, internal_batch_size, show_progress)
    setup = _setup(explained, baseline=baseline, patch_size=patch_size, run=run)
    N = setup.n_features
    if isinstance(n_groups, bool) or not isinstance(n_groups, int):
        raise TypeError(f"n_groups must be an int, got {type(n_groups).__name__}")
    if not 2 <= n_groups <= N:
        raise ValueError(
            f"n_groups must lie in [2, {N}] (the features), got {n_groups}"
        )
    score, base = setup.class_score(apply_softmax)
    group = torch.div(
        _ranks(setup.scores, descending=True) * n_groups, N, rounding_mode="floor"
    )
    salience = torch.zeros(
        group.shape[0], n_groups, dtype=torch.float64, device=group.device
    ).scatter_add_(1, group, setup.scores.double())
    perturbed = setup.perturbed_scores(
        copies=n_groups,
        feature_mask=lambda r, k: group[r] == k[:, None],
        reduce=score,
        desc="SaCo",
    )
    change = base[:, None] - perturbed
    coefficient = _coefficient(salience, change)
    constant = setup.scores.amax(dim=1) == setup.scores.amin(dim=1)
    coefficient = torch.where(constant, torch.nan, coefficient)
    return SaCoResult(coefficient, salience.float(), change)
