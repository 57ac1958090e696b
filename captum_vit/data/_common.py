"""Sample types and small tensor helpers shared by every dataset in
:mod:`captum_vit.data`."""

from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .._maps import SizeType, _pair


class Sample(NamedTuple):
    r"""One image with its class and its localisation ground truth.

    ``torch.utils.data.default_collate`` stacks every field, so a
    ``DataLoader`` over any dataset of this package yields a :class:`Sample`
    whose fields carry a leading batch dimension.

    Attributes:
        image (Tensor): float image of shape ``(3, H, W)``, values in ``[0, 1]``
            before the dataset's ``transform``.
        label (int): class index; ``-1`` where the format has no class label
            (ImageNet-Segmentation).
        mask (Tensor): bool tensor of shape ``(H, W)``, ``True`` on the pixels
            of the object that defines the class.
        box (Tensor): float tensor ``(x_min, y_min, x_max, y_max)`` in pixels,
            the tight box of ``mask`` with exclusive upper corner, so that
            ``mask[y_min:y_max, x_min:x_max]`` holds every ``True`` pixel.
            All zeros when the mask is empty.
    """

    image: torch.Tensor
    label: int
    mask: torch.Tensor
    box: torch.Tensor


class ClassificationSample(NamedTuple):
    r"""One image with its class, for formats without localisation ground
    truth (ImageNet validation folders, CIFAR-10).

    Attributes:
        image (Tensor): float image of shape ``(3, H, W)``, values in ``[0, 1]``
            before the dataset's ``transform``.
        label (int): class index.
    """

    image: torch.Tensor
    label: int


class GridSample(NamedTuple):
    r"""A 2x2 grid of images of four different classes, for the grid
    pointing game.

    Attributes:
        image (Tensor): float image ``(3, H, W)``; cell ``k`` (row-major) covers
            rows ``(k // 2) * H / 2`` to ``(k // 2 + 1) * H / 2`` and columns
            ``(k % 2) * W / 2`` to ``(k % 2 + 1) * W / 2``.
        label (int): class of the target cell, the class to explain.
        cell (int): index of the target cell, in ``0..3`` (row-major).
        cell_labels (Tensor): int64 tensor ``(4,)``, the class of every cell.
        mask (Tensor): bool ``(H, W)``, the target object's pixels.
        box (Tensor): float ``(4,)``, the target object's box, as in
            :class:`Sample`.
    """

    image: torch.Tensor
    label: int
    cell: int
    cell_labels: torch.Tensor
    mask: torch.Tensor
    box: torch.Tensor


class _ImageFiles(Dataset):
    """The base of the datasets read from image files found when they are
    built (ImageNet folders, ImageNet-S, COVID-QU-Ex): :attr:`samples` holds
    one tuple per image (its paths, its class), ``__getitem__`` resizes to
    :attr:`size` and applies :attr:`transform`."""

    samples: List[Tuple[Any, ...]]
    size: Optional[SizeType]
    transform: Optional[Callable]

    def _found(
        self,
        samples: List[Tuple[Any, ...]],
        nothing: str,
        size: Optional[SizeType],
        transform: Optional[Callable],
    ) -> None:
        """Keep the ``samples`` found, or raise ``FileNotFoundError(nothing)``
        when there are none, and the ``size`` and ``transform`` of every
        item."""
        if not samples:
            raise FileNotFoundError(nothing)
        self.samples = samples
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)


def box_from_mask(mask: torch.Tensor) -> torch.Tensor:
    r"""Tight bounding box of a boolean mask.

    Args:
        mask (Tensor): bool tensor of shape ``(H, W)``.

    Returns:
        Tensor: float tensor ``(x_min, y_min, x_max, y_max)`` with exclusive
        upper corner; all zeros for an empty mask.

    Examples::

        >>> m = torch.zeros(8, 8, dtype=torch.bool)
        >>> m[2:4, 3:6] = True
        >>> box_from_mask(m)
        tensor([3., 2., 6., 4.])
    """
    mask = torch.as_tensor(mask).bool()
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if rows.numel() == 0:
        return torch.zeros(4)
    return torch.tensor(
        [cols[0] + 0.0, rows[0] + 0.0, cols[-1] + 1.0, rows[-1] + 1.0],
        dtype=torch.float32,
    )


def _to_image_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W)`` / ``(H, W, C)`` array -> float ``(3, H, W)`` in [0, 1]."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    if image.dtype == torch.uint8:
        return image.float().div_(255.0)
    if image.dtype == torch.uint16:
        return image.to(torch.int32).float().div_(65535.0)
    return image.float()


def _resize_image(image: torch.Tensor, size: Optional[SizeType]) -> torch.Tensor:
    if size is None or tuple(image.shape[-2:]) == _pair(size):
        return image
    out = F.interpolate(
        image[None], size=_pair(size), mode="bilinear", align_corners=False
    )
    return out[0].clamp_(0.0, 1.0)


def _resize_mask(mask: torch.Tensor, size: Optional[SizeType]) -> torch.Tensor:
    if size is None or tuple(mask.shape[-2:]) == _pair(size):
        return mask
    out = F.interpolate(mask[None, None].float(), size=_pair(size), mode="nearest")
    return out[0, 0].to(mask.dtype)


def _read_rgb(path: str) -> np.ndarray:
    """The pixels of an image file as a uint8 ``(H, W, 3)`` RGB array."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow ships with matplotlib
        raise ImportError(
            "Reading image files needs Pillow: pip install 'captum-vit[data]'"
        ) from err
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _load_image_file(path: str) -> torch.Tensor:
    return _to_image_tensor(_read_rgb(path))


def _load_mask_file(path: str) -> torch.Tensor:
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover
        raise ImportError(
            "Reading mask files needs Pillow: pip install 'captum-vit[data]'"
        ) from err
    with Image.open(path) as img:
        array = np.asarray(img.convert("L"))
    return torch.from_numpy(array > 127)


def _finish(
    image: torch.Tensor,
    label: int,
    mask: torch.Tensor,
    size: Optional[SizeType],
    transform: Optional[Callable],
) -> Sample:
    """Resize image and mask together, recompute the box, apply transform."""
    image = _resize_image(image, size)
    mask = _resize_mask(mask, size)
    box = box_from_mask(mask)
    return Sample(_apply_transform(transform, image), int(label), mask, box)


def _apply_transform(
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]], image: torch.Tensor
) -> torch.Tensor:
    """A dataset's ``transform`` of one image tensor (the image itself if None)."""
    return image if transform is None else transform(image)


def _check_sequence(values: Sequence, name: str) -> None:
    if len(values) == 0:
        raise ValueError(f"{name} is empty")
