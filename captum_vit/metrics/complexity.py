"""Complexity criteria."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._utils import _check_batch, _spatial, _to_token_map


def effective_complexity(
    attributions: Tensor,
    eps: float = 1e-5,
    normalize: bool = True,
    abs: bool = True,
    patch_size: Optional[int] = None,
) -> Tensor:
    r"""Effective complexity of Nguyen and Martínez (2020), "On quantitative aspects
    of model interpretability", https://arxiv.org/abs/2007.07584.

    The number of features whose attribution exceeds ``eps`` in absolute value.
    **Lower is better** (a simpler, sparser explanation).

    .. math::

        \mathrm{EC}(a) = \Big|\Big\{ i : \frac{|a_i|}{\max_j |a_j|} > \epsilon
        \Big\}\Big|

    (without the denominator when ``normalize=False``). Features are the spatial
    positions of the attribution after summing channels: pixels for a pixel map,
    tokens for a token grid, or patches when ``patch_size`` is given (sum over each
    patch). Quantus' ``EffectiveComplexity`` counts array elements and normalises by
    the maximum over the whole batch; with one image, a one-channel map and the same
    ``eps`` both count the same.

    Args:

        attributions (Tensor): ``(B, C, H, W)``, ``(B, 1, H, W)``, ``(B, H, W)`` or a
            token grid ``(B, gh, gw)``.
        eps (float, optional): threshold. Default: 1e-5
        normalize (bool, optional): divide by each image's maximum absolute value
            first (a map of zeros stays zeros). Default: True
        abs (bool, optional): threshold absolute values; ``False`` counts only
            values above ``eps``. Default: True
        patch_size (int, optional): count patches of a pixel map. Default: None

    Returns:
        Tensor: ``(B,)`` long counts.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import effective_complexity
        >>> a = torch.tensor([[[0.0, 1.0], [0.5, 0.0]]])
        >>> effective_complexity(a)
        tensor([2])
    """
    if not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    _check_batch(attributions, attributions.shape[0], "attributions")
    amap = _spatial(attributions)
    if patch_size is not None:
        amap = _to_token_map(amap, tuple(amap.shape[-2:]), patch_size)
    B = amap.shape[0]
    values = amap.reshape(B, -1)
    if normalize:
        peak = values.abs().amax(dim=1, keepdim=True)
        values = values / torch.where(peak > 0, peak, torch.ones_like(peak))
    if abs:
        values = values.abs()
    return (values > eps).sum(dim=1)
