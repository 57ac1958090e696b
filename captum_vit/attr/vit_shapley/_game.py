r"""The game :math:`v_x(S) = \mathrm{link}(g(x, S))` and the efficient
normalisation of the explainer's values; used by inference and training."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from ._surrogate import ShapleySurrogate

#: the link functions a game may apply to the surrogate's logits
LINKS = ("softmax", "logsoftmax", "identity")


def link_function(name: str) -> Callable[[Tensor], Tensor]:
    """The link ``name`` (one of :data:`LINKS`) over the class dimension."""
    if name == "softmax":
        return lambda z: z.softmax(dim=-1)
    if name == "logsoftmax":
        return lambda z: z.log_softmax(dim=-1)
    if name == "identity":
        return lambda z: z
    raise ValueError(f"link must be one of {LINKS}, got {name!r}")


def grand_and_null(
    surrogate: ShapleySurrogate,
    images: Tensor,
    link: Callable[[Tensor], Tensor],
    max_rows: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """``v(1)`` per image ``(B, C)`` and ``v(0)`` ``(1, C)`` in one forward
    (two when ``B + 1`` rows exceed ``max_rows``).

    With every patch held out, kept tokens see only prefix tokens, so
    ``v(0)`` does not depend on the image; it is computed on the first one.
    """
    B = images.shape[0]
    P = surrogate.num_players((images.shape[-2], images.shape[-1]))
    if max_rows is not None and B + 1 > max_rows:
        grand = link(surrogate(images, images.new_ones(B, P)))
        return grand, link(surrogate(images[:1], images.new_zeros(1, P)))
    x = torch.cat([images, images[:1]], 0)
    mask = torch.cat([images.new_ones(B, P), images.new_zeros(1, P)], 0)
    out = link(surrogate(x, mask))
    return out[:B], out[B:]


def efficient_normalisation(raw: Tensor, grand: Tensor, null: Tensor) -> Tensor:
    r"""Shift raw values ``(B, P, C)`` so that they sum to ``grand - null``.

    :math:`\phi_i = \tilde\phi_i + \frac{1}{d}(v(\mathbf 1) - v(\mathbf 0)
    - \sum_j \tilde\phi_j)`, with ``grand`` ``(B, C)`` and ``null``
    ``(1 or B, C)``.
    """
    gap = grand - null - raw.sum(dim=1)
    return raw + gap[:, None, :] / raw.shape[1]
