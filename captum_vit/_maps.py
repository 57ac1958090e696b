"""Pixel maps and token maps: the one home of the conversions between them.

Shared by :mod:`captum_vit.attr` and :mod:`captum_vit.metrics` (which never
imports ``attr``), so it imports nothing of the project.

**The border rule.** Pixel ``(y, x)`` lies in token ``(y // ph, x // pw)``. A
model whose patch grid does not tile the image either *drops* the border (a
stride-``p`` patch embedding without padding: the pixels past the last full
patch are never seen) or *pads* it (the last row/column of patches reaches past
the image). Both directions follow the model:

* :func:`tokens_to_pixels` spreads each token over the area its patch covers,
  then crops (padded border) or fills with zeros (dropped border, the pixels the
  model never saw carry no attribution);
* :func:`pixels_to_tokens` sums the pixels of each patch that lie in the image:
  pixels past the grid (dropped border) belong to no token and are left out;
  a padded border patch holds the real pixels it covers (``reduce="mean"``
  averages over those only).

So ``pixels_to_tokens(tokens_to_pixels(g, mode="nearest"), reduce="mean")``
returns ``g`` for every image size, and where the grid tiles the image both are
the plain ``p x p`` block maps.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["tokens_to_pixels", "pixels_to_tokens", "min_max"]

SizeType = Union[int, Tuple[int, int]]


def _pair(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``(size, size)`` for an int, ``(h, w)`` as ints for a pair: the one
    int-or-pair helper of the package (adapters, data, maps)."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _fit(maps: Tensor, height: int, width: int) -> Tensor:
    """Crop ``(..., h, w)`` to at most ``(height, width)``, then zero-fill the
    rest: the patch area mapped onto the image."""
    maps = maps[..., :height, :width]
    h, w = maps.shape[-2:]
    if (h, w) == (height, width):
        return maps
    out = maps.new_zeros(maps.shape[:-2] + (height, width))
    out[..., :h, :w] = maps
    return out


def tokens_to_pixels(
    grid: Tensor,
    image_size: Tuple[int, int],
    patch_size: SizeType,
    channels: int = 1,
    mode: str = "bilinear",
) -> Tensor:
    """Map a patch grid ``(B, gh, gw)`` onto pixels ``(B, channels, H, W)``.

    The grid is upsampled to ``(gh * ph, gw * pw)`` (the area the patches
    cover), then cropped or zero-filled to ``(H, W)``, and repeated over
    ``channels``. ``"nearest"`` repeats each token over its ``ph x pw`` patch
    exactly (any dtype, booleans included).

    **Border rule** (where the patch grid does not tile the image), shared
    with :func:`captum_vit.to_tokens` and the metrics: pixel ``(y, x)`` lies
    in token ``(y // ph, x // pw)``. A model that *drops* the border (pixels
    past the last full patch are never seen) gives those pixels 0 here, and
    ``to_tokens`` leaves them out; a model that *pads* it has a last row or
    column of patches reaching past the image: here they are cropped, and
    ``to_tokens`` pools the image pixels they cover (``reduce="mean"``
    averages over those only). So ``to_tokens(tokens_to_pixels(g,
    mode="nearest"), reduce="mean")`` gives ``g`` back for every image size.

    Args:
        grid (Tensor): ``(B, gh, gw)`` token scores.
        image_size (tuple of int): ``(H, W)`` of the input.
        patch_size (int or tuple of int): ``(ph, pw)``.
        channels (int, optional): number of channels of the output. Default: 1
        mode (str, optional): interpolation mode of
            :func:`torch.nn.functional.interpolate` (``"bilinear"`` as in
            Chefer et al.'s evaluation, ``"nearest"`` for blocky patches).
            Default: ``"bilinear"``

    Returns:
        Tensor: ``(B, channels, H, W)``.

    Examples::

        >>> import torch
        >>> from captum_vit.attr import tokens_to_pixels
        >>> tokens_to_pixels(torch.ones(1, 2, 2), (5, 5), 2, mode="nearest")[0, 0]
        tensor([[1., 1., 1., 1., 0.],
                [1., 1., 1., 1., 0.],
                [1., 1., 1., 1., 0.],
                [1., 1., 1., 1., 0.],
                [0., 0., 0., 0., 0.]])
    """
    B, gh, gw = grid.shape
    H, W = image_size
    ph, pw = _pair(patch_size)
    if mode == "nearest":
        up = grid.repeat_interleave(ph, dim=1).repeat_interleave(pw, dim=2)[:, None]
    else:
        kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        up = F.interpolate(grid[:, None], size=(gh * ph, gw * pw), mode=mode, **kw)
    return _fit(up, H, W).expand(B, channels, H, W).contiguous()


def pixels_to_tokens(
    pixels: Tensor,
    grid_size: Tuple[int, int],
    patch_size: SizeType,
    reduce: str = "sum",
) -> Tensor:
    """Pool a pixel map onto the patch grid: ``(B, gh, gw)``.

    Sums the channels and the pixels of each patch; pixels past the grid (a
    model that drops the border) are left out, and a border patch that reaches
    past the image (a model that pads) holds the pixels it covers (the border
    rule of :func:`tokens_to_pixels`).

    Args:
        pixels (Tensor): ``(B, C, H, W)`` or ``(B, H, W)``.
        grid_size (tuple of int): ``(gh, gw)``, the model's token grid.
        patch_size (int or tuple of int): ``(ph, pw)``.
        reduce (str, optional): ``"sum"``, or ``"mean"`` over the channels and
            the image pixels of each patch. Default: ``"sum"``

    Returns:
        Tensor: ``(B, gh, gw)``.

    Examples::

        >>> import torch
        >>> pixels_to_tokens(torch.ones(1, 3, 5, 5), (2, 2), 2)
        tensor([[[12., 12.],
                 [12., 12.]]])
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    channels = pixels.shape[1] if pixels.dim() == 4 else 1
    maps = pixels.sum(dim=1) if pixels.dim() == 4 else pixels
    B, H, W = maps.shape
    gh, gw = int(grid_size[0]), int(grid_size[1])
    ph, pw = _pair(patch_size)
    maps = _fit(maps, gh * ph, gw * pw)
    out = maps.reshape(B, gh, ph, gw, pw).sum(dim=(2, 4))
    if reduce == "mean":
        rows = (H - torch.arange(gh, device=out.device) * ph).clamp(0, ph)
        cols = (W - torch.arange(gw, device=out.device) * pw).clamp(0, pw)
        counts = (rows[:, None] * cols[None, :] * channels).to(out.dtype)
        out = out / counts
    return out


def min_max(maps: Tensor) -> Tensor:
    r"""Scale each map (each entry of the first axis) to :math:`[0, 1]`:

    .. math::

        \hat a = \frac{a - \min a}{\max a - \min a},

    the minimum and maximum taken over all the other axes. A constant map (or
    one with a NaN) becomes zeros.

    Args:
        maps (Tensor): ``(B, ...)``, floating point.

    Returns:
        Tensor: the same shape and dtype.

    Examples::

        >>> import torch
        >>> min_max(torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]]))
        tensor([[0.0000, 1.0000, 0.5000],
                [0.0000, 0.0000, 0.0000]])
    """
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - low
    ok = span > 0
    scaled = (flat - low) / torch.where(ok, span, torch.ones_like(span))
    return torch.where(ok, scaled, torch.zeros_like(flat)).reshape(maps.shape)
