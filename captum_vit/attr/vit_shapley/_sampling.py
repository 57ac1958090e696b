"""The two subset distributions of ViT Shapley: surrogate and explainer training."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def sample_uniform_subsets(
    batch: int, num_players: int, generator: Optional[torch.Generator] = None
) -> Tensor:
    r"""Subsets for surrogate training: uniform size, then a uniform subset.

    :math:`|S| \sim \mathcal U\{0, \dots, d\}`, then :math:`S` uniform among
    the subsets of that size (the paper's surrogate distribution).

    Args:
        batch (int): number of subsets.
        num_players (int): number of players :math:`d` (patch tokens).
        generator (torch.Generator, optional): random generator. Default: None

    Returns:
        Tensor: ``(batch, num_players)`` float 0/1 masks (1 = kept).
    """
    size = torch.randint(0, num_players + 1, (batch,), generator=generator)
    return _random_subsets(size, num_players, generator)


def sample_shapley_subsets(
    batch: int,
    num_players: int,
    paired: bool = True,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    r"""Subsets drawn from the Shapley kernel, optionally paired.

    .. math::
        p(S) \propto \frac{d - 1}{\binom{d}{|S|}\,|S|\,(d - |S|)},
        \qquad 0 < |S| < d

    i.e. the size :math:`s` with probability :math:`\propto 1 / (s (d - s))`,
    then a uniform subset of that size. With ``paired`` every odd row is the
    complement of the row before it (paired sampling, Covert & Lee 2021).

    Args:
        batch (int): number of subsets (even when ``paired``).
        num_players (int): number of players :math:`d \ge 2`.
        paired (bool, optional): complement pairs. Default: True
        generator (torch.Generator, optional): random generator. Default: None

    Returns:
        Tensor: ``(batch, num_players)`` float 0/1 masks (1 = kept).
    """
    if num_players < 2:
        raise ValueError("the Shapley kernel needs at least 2 players")
    if paired and batch % 2:
        raise ValueError(
            f"paired sampling needs an even number of subsets, got {batch}"
        )
    s = torch.arange(1, num_players, dtype=torch.float64)
    probs = 1.0 / (s * (num_players - s))
    n = batch // 2 if paired else batch
    size = 1 + torch.multinomial(probs, n, replacement=True, generator=generator)
    masks = _random_subsets(size, num_players, generator)
    if paired:
        masks = torch.stack([masks, 1.0 - masks], dim=1).reshape(batch, num_players)
    return masks


def _random_subsets(
    size: Tensor, num_players: int, generator: Optional[torch.Generator]
) -> Tensor:
    """One uniform subset of ``size[i]`` players per row, as 0/1 masks.

    A uniform random permutation per row (the ranks of uniform noise); the
    first ``size[i]`` players of the permutation are kept.
    """
    ranks = torch.rand(size.shape[0], num_players, generator=generator).argsort(-1)
    ranks = ranks.argsort(-1)
    return (ranks < size[:, None]).float()
