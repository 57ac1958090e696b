"""Safe decoding of uploaded images, and PNG encoding of images and overlays.

Nothing here touches the disk: uploads are decoded from memory, and every
image the server sends is encoded into memory (base64 ``data:`` URLs or PNG
bytes). The aspect ratio of an upload is kept: the model sees it letterboxed
(:func:`captum_vit.viz.letterbox`: resized to fit, padded with the
normalisation mean) and the maps are drawn over the picture itself
(:func:`captum_vit.viz.content_region` cuts the padding off).
"""

from __future__ import annotations

import base64
import io
import warnings
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..viz import Letterbox, content_region, letterbox, normalize_map, open_reduced

#: Image formats an upload may have (Pillow format names).
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP"})

#: Longer side of the copy of an upload kept for display (and the overlays).
DISPLAY_SIDE = 448


class ImageDecodeError(ValueError):
    """An upload is not an image this server accepts (message says why)."""


class Picture(NamedTuple):
    """An image as the visualiser keeps it.

    Attributes:
        input (Tensor): ``(3, H, W)`` in [0, 1] at the model's size (before
            the model's transform).
        display (Tensor): ``(3, h, w)`` in [0, 1]: the picture shown, in its
            own aspect ratio.
        box (Letterbox or None): where ``display`` lies in ``input``; None
            when they are the same image.
    """

    input: Tensor
    display: Tensor
    box: Optional[Letterbox]


def decode_image(
    data: bytes,
    max_pixels: int = 4096 * 4096,
    max_side: int = 2 * DISPLAY_SIDE,
) -> np.ndarray:
    """Decode an uploaded image safely into an ``(H, W, 3)`` array in [0, 1].

    The header is read first: the format must be one of :data:`ALLOWED_FORMATS`
    and the declared size at most ``max_pixels`` (decompression bombs are
    rejected before any pixel is decoded); then the file is verified, decoded
    (first frame only; JPEGs at a reduced scale where they are much larger
    than needed), reduced to at most ``max_side`` pixels on its longer side
    and converted to RGB (16-bit grey images scaled properly, see
    :func:`captum_vit.viz.image_to_array`). The aspect ratio is kept.

    Args:
        data (bytes): the uploaded file.
        max_pixels (int, optional): largest accepted ``width * height``.
            Default: ``4096 * 4096``
        max_side (int, optional): longer side of the returned array.
            Default: 896

    Raises:
        ImageDecodeError: empty, corrupt, of another type, or too large.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageDecodeError("the uploaded file is empty")
    bad = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)
    try:
        with Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS)) as probe:
            fmt = probe.format
            width, height = probe.size
            if fmt not in ALLOWED_FORMATS:
                raise ImageDecodeError(
                    f"unsupported image format {fmt}; allowed: "
                    f"{', '.join(sorted(ALLOWED_FORMATS))}"
                )
            if width <= 0 or height <= 0 or width * height > max_pixels:
                raise ImageDecodeError(
                    f"image of {width}x{height} pixels exceeds the limit of "
                    f"{max_pixels} pixels"
                )
            probe.verify()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as img:
                arr = open_reduced(img, max_side)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(
            "the file is not a valid image of an allowed format ("
            + ", ".join(sorted(ALLOWED_FORMATS))
            + ")"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"image rejected as a decompression bomb: {e}") from None
    except bad as e:
        raise ImageDecodeError(f"the file is not a valid image ({e})") from None
    return arr


def picture_of_upload(
    arr: np.ndarray, size: Tuple[int, int], fill: Optional[Sequence[float]]
) -> Picture:
    """The :class:`Picture` of a decoded upload for a model taking ``size``."""
    x, box = letterbox(arr, size, fill)
    display = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    h, w = display.shape[-2:]
    scale = DISPLAY_SIDE / max(h, w)
    if scale < 1.0:
        display = F.interpolate(
            display[None],
            size=(max(1, round(h * scale)), max(1, round(w * scale))),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0].clamp(0.0, 1.0)
    return Picture(x, display.contiguous(), box)


def display_array(image: Tensor) -> np.ndarray:
    """A ``(3, H, W)`` (or ``(1, H, W)``) image as an ``(H, W, 3)`` array in [0, 1].

    Images already in [0, 1] are kept; others are min-max scaled.
    """
    img = image.detach().float().cpu()
    if img.dim() == 2:
        img = img[None]
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    img = img[:3]
    lo, hi = float(img.min()), float(img.max())
    if lo < 0.0 or hi > 1.0:
        img = (img - lo) / max(hi - lo, 1e-12)
    return img.permute(1, 2, 0).numpy()


def heat_array(attr: Tensor, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Reduce a map to ``(H, W)`` (channel sum), resize it to ``size`` and min-max
    it to [0, 1] (:func:`captum_vit.viz.normalize_map`).

    Accepts ``(C, H, W)``, ``(1, H, W)`` or ``(H, W)`` (for example a token grid,
    upsampled bilinearly to ``size``).
    """
    a = attr.detach().float().cpu()
    if a.dim() == 3:
        a = a.sum(0)
    if size is not None and tuple(a.shape) != tuple(size):
        a = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        a = F.interpolate(
            a[None, None], size=tuple(size), mode="bilinear", align_corners=False
        )[0, 0]
    return normalize_map(a)


def jet(x: np.ndarray) -> np.ndarray:
    """The jet colour map: ``(...)`` values in [0, 1] to ``(..., 3)`` RGB."""
    x = np.clip(x, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # r, g, b
    return np.clip(1.5 - np.abs(4.0 * x - 4.0 * centres), 0.0, 1.0)


def overlay_array(
    image: Tensor,
    attr: Tensor,
    alpha: float = 0.5,
    box: Optional[Letterbox] = None,
) -> np.ndarray:
    """Blend the jet-coloured map of ``attr`` over ``image``: ``(H, W, 3)``.

    ``box`` says where ``image`` lies in the input ``attr`` explains; the
    padding around it is cut off before the map is resized onto the image.
    """
    img = display_array(image)
    heat = heat_array(content_region(attr, box), img.shape[:2])
    return (1.0 - alpha) * img + alpha * jet(heat)


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    """Encode an ``(H, W, 3)`` or ``(H, W)`` array in [0, 1] as PNG bytes.

    Args:
        array (numpy.ndarray): the image.
        scale (int, optional): integer upscaling (nearest), so that small
            images stay sharp in the page. Default: 1
    """
    from PIL import Image

    a = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    img = Image.fromarray(a)
    if scale > 1:
        img = img.resize(
            (img.width * scale, img.height * scale), Image.Resampling.NEAREST
        )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def data_url(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URL of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def display_scale(size: Sequence[int], target: int = 224) -> int:
    """Integer factor bringing the longer side of ``size`` near ``target``."""
    return max(1, int(round(target / max(1, max(size)))))
