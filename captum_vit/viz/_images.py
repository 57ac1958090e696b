"""Image files to arrays, and the letterbox that fits them to a model's input.

One home for what the command line and the web visualiser both do with a
user's picture: decode it (8- and 16-bit, grey, palette, alpha), fit it into
the model's input size keeping its aspect ratio (resize, then pad: nothing is
cropped), and map an attribution of the padded input back onto the picture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "Letterbox",
    "content_region",
    "image_to_array",
    "letterbox",
    "load_image",
    "open_reduced",
]


def image_to_array(img: Image.Image) -> np.ndarray:
    r"""A Pillow image as an ``(H, W, 3)`` float32 array in ``[0, 1]``.

    8-bit modes go through Pillow's ``convert("RGB")`` (grey, palette, CMYK;
    alpha is dropped). Single-channel 16-bit and 32-bit integer images
    (``I;16*``, ``I``: what Pillow makes of 16-bit grey PNGs) are scaled by
    :math:`2^{16}-1` (by their maximum where it exceeds that), and float
    images (``F``) are kept where they lie in ``[0, 1]`` and min-max scaled
    otherwise; ``convert("RGB")`` would clip all of them to 255 (an almost
    white picture). Pillow reads 16-bit colour PNGs as 8-bit RGB already.

    Args:
        img (PIL.Image.Image): a loaded image (first frame for animations).

    Returns:
        numpy.ndarray: ``(H, W, 3)`` float32 in ``[0, 1]``.

    Examples::

        >>> from PIL import Image
        >>> image_to_array(Image.open("scan16.png")).max() <= 1.0
        True
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.float64)
        top = max(65535.0, float(a.max(initial=0.0)))
        grey = np.clip(a, 0.0, None) / top
    elif mode == "F":
        grey = np.asarray(img).astype(np.float64)
        grey = np.nan_to_num(grey, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            grey = (grey - lo) / max(hi - lo, 1e-12)
    else:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return np.repeat(grey.astype(np.float32)[..., None], 3, axis=-1)


def decode_loaded(img: Image.Image, max_side: Optional[int] = None) -> np.ndarray:
    r"""A loaded Pillow image, at most ``max_side`` pixels on its longer side
    (resized, antialiased, aspect ratio kept), as :func:`image_to_array`."""
    from PIL import Image

    if not (img.mode.startswith("I") or img.mode == "F"):
        img = img.convert("RGB")  # 8-bit modes; Pillow resizes RGB antialiased
    if max_side is not None and max(img.size) > max_side:
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
    return image_to_array(img)


def open_reduced(img: Image.Image, max_side: Optional[int] = None) -> np.ndarray:
    r"""Decode the first frame of an opened Pillow image (JPEGs at a reduced
    scale when far larger than ``max_side``) into an array (:func:`decode_loaded`)."""
    img.seek(0)
    if img.format == "JPEG" and max_side is not None:
        img.draft("RGB", (max_side, max_side))
    img.load()
    return decode_loaded(img, max_side)


def load_image(path: str, max_side: Optional[int] = None) -> np.ndarray:
    r"""Read an image file completely into an ``(H, W, 3)`` array in ``[0, 1]``.

    The whole file is decoded here, so a truncated or corrupt file fails now
    (with Pillow's ``OSError``), not later inside a method.

    Args:
        path (str): the file.
        max_side (int, optional): reduce the picture (aspect ratio kept) to at
            most this many pixels on its longer side. Default: None (as is)

    Returns:
        numpy.ndarray: ``(H, W, 3)`` float32 in ``[0, 1]`` (see
        :func:`image_to_array`).

    Raises:
        FileNotFoundError: no such file.
        PIL.UnidentifiedImageError: not an image Pillow knows.
        OSError: truncated or corrupt image data.

    Examples::

        >>> picture = load_image("photo.jpg", max_side=1024)
        >>> x, box = letterbox(picture, 224, fill=(0.485, 0.456, 0.406))
    """
    from PIL import Image

    with Image.open(path) as img:
        return open_reduced(img, max_side)


class Letterbox(NamedTuple):
    r"""Where a picture sits inside the model input made by :func:`letterbox`.

    Attributes:
        top (int): first row of the picture in the input.
        left (int): first column of the picture in the input.
        height (int): rows the picture covers.
        width (int): columns the picture covers.
        size (tuple of int): ``(H, W)`` of the whole input.
    """

    top: int
    left: int
    height: int
    width: int
    size: Tuple[int, int]


def letterbox(
    image: Union[np.ndarray, Tensor],
    size: Union[int, Sequence[int]],
    fill: Optional[Sequence[float]] = None,
) -> Tuple[Tensor, Letterbox]:
    r"""Fit a picture into ``size`` keeping its aspect ratio: resize, then pad.

    The picture is resized (bilinear, antialiased) so that it fits ``size``
    with its longer relative side filling it, and centred; the bands left over
    are filled with ``fill``. With the model's normalisation mean as ``fill``
    the bands are exactly zero after normalisation. Nothing is cropped, so an
    attribution of the input maps back onto the whole picture
    (:func:`content_region`). A picture of the input's shape is returned
    unchanged (no resampling).

    Args:
        image (numpy.ndarray or Tensor): ``(H, W, 3)`` array or ``(3, H, W)``
            tensor in ``[0, 1]``.
        size (int or tuple of int): ``S`` or ``(H, W)`` of the model input.
        fill (sequence of float, optional): RGB value of the bands.
            Default: None (0.5 grey)

    Returns:
        tuple: the ``(3, H, W)`` float32 input in ``[0, 1]`` and the
        :class:`Letterbox` saying where the picture lies in it.

    Examples::

        >>> x, box = letterbox(np.zeros((200, 300, 3), np.float32), 224)
        >>> x.shape, box
        (torch.Size([3, 224, 224]), Letterbox(top=37, left=0, height=149, width=224, size=(224, 224)))
    """
    if isinstance(image, np.ndarray):
        img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        img = img.permute(2, 0, 1)
    else:
        img = image.detach().float().cpu()
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(
            f"expected an (H, W, 3) array or a (3, H, W) tensor, got {tuple(img.shape)}"
        )
    H, W = (int(size), int(size)) if isinstance(size, int) else map(int, size)
    h0, w0 = img.shape[-2:]
    if (h0, w0) == (H, W):
        return img.clone(), Letterbox(0, 0, H, W, (H, W))
    scale = min(H / h0, W / w0)
    h = min(H, max(1, round(h0 * scale)))
    w = min(W, max(1, round(w0 * scale)))
    resized = F.interpolate(
        img[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True
    )[0].clamp(0.0, 1.0)
    value = torch.tensor(list(fill) if fill is not None else [0.5] * 3)
    out = value.float()[:, None, None].expand(3, H, W).clone()
    top, left = (H - h) // 2, (W - w) // 2
    out[:, top : top + h, left : left + w] = resized
    return out, Letterbox(top, left, h, w, (H, W))


def content_region(attr: Tensor, box: Optional[Letterbox]) -> Tensor:
    r"""The part of an input-sized map that covers the picture.

    A map of the letterboxed input (its last two dimensions ``box.size``, or a
    token grid of any size, scaled accordingly) is cut to the picture's
    rectangle, ready to be resized onto the original picture. Padding bands
    are dropped; ``box=None`` returns ``attr`` unchanged.

    Args:
        attr (Tensor): ``(..., h, w)`` map of the input.
        box (Letterbox, optional): from :func:`letterbox`.

    Returns:
        Tensor: ``(..., h', w')`` map of the picture.
    """
    if box is None:
        return attr
    gh, gw = attr.shape[-2:]
    H, W = box.size
    fy, fx = gh / H, gw / W
    top, left = int(box.top * fy), int(box.left * fx)
    bottom = max(top + 1, int(round((box.top + box.height) * fy)))
    right = max(left + 1, int(round((box.left + box.width) * fx)))
    return attr[..., top:bottom, left:right]
