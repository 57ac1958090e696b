r"""Loader for COVID-QU-Ex chest X-rays with lung or infection masks."""

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ._common import (
    Sample,
    SizeType,
    _finish,
    _ImageFiles,
    _load_image_file,
    _load_mask_file,
)

#: The three classes of COVID-QU-Ex, in label order.
COVID_CLASSES: Tuple[str, ...] = ("COVID-19", "Non-COVID", "Normal")

_MASK_FOLDERS = {"lung": "lung masks", "infection": "infection masks"}
_EXTENSIONS = (".png", ".jpg", ".jpeg")


class COVIDQUEx(_ImageFiles):
    r"""COVID-QU-Ex (Tahir et al., "COVID-19 infection localization and
    severity grading from chest X-ray images", Computers in Biology and
    Medicine 2021): 33,920 chest X-rays of three classes with lung masks, and
    a 5,826-image subset with infection masks.

    Reads the layout of the dataset's release (Kaggle
    ``anasmohammedtahir/covidqu``), one of its two parts at a time::

        root/                      # "Lung Segmentation Data" or
                                   # "Infection Segmentation Data"
          Train/ Val/ Test/        # the split
            COVID-19/ Non-COVID/ Normal/
              images/              # 256x256 grey PNGs
              lung masks/          # same file names, 255 on the lungs
              infection masks/     # (infection part only) 255 on lesions

    A sample's ``mask`` is the mask of the same file name in the chosen mask
    folder (pixels above 127 are ``True``); images without a mask file are an
    error. Infection masks of ``Normal`` and ``Non-COVID`` images are empty
    (their ``box`` is all zeros). Images are returned as 3-channel tensors.

    Args:
        root (str): the part's folder, holding the split folders.
        split (str, optional): split folder name, ``"Train"``, ``"Val"`` or
            ``"Test"`` (case-insensitive).
            Default: ``"Test"``
        mask (str, optional): ``"lung"`` or ``"infection"``.
            Default: ``"lung"``
        classes (Sequence[str], optional): class folders to read, in label
            order.
            Default: ``COVID_CLASSES``
        size (int or tuple[int, int], optional): resize image (bilinear) and
            mask (nearest) to this ``(H, W)``.
            Default: None (native 256x256)
        transform (Callable, optional): applied to each float image tensor
            ``(3, H, W)`` in ``[0, 1]`` after resizing.
            Default: None

    Examples::

        >>> ds = COVIDQUEx("COVID-QU-Ex/Infection Segmentation Data",
        ...                split="Test", mask="infection", size=224)
        >>> s = ds[0]
        >>> ds.classes[s.label], s.image.shape, s.mask.shape
        ('COVID-19', torch.Size([3, 224, 224]), torch.Size([224, 224]))
    """

    def __init__(
        self,
        root: str,
        split: str = "Test",
        mask: str = "lung",
        classes: Sequence[str] = COVID_CLASSES,
        size: Optional[SizeType] = None,
        transform: Optional[Callable] = None,
    ) -> None:
        if mask not in _MASK_FOLDERS:
            raise ValueError(
                f"mask must be one of {sorted(_MASK_FOLDERS)}, got {mask!r}"
            )
        split_dir = _find_ci(root, split)
        self.root = root
        self.split = os.path.basename(split_dir)
        self.mask_kind = mask
        self.classes: List[str] = list(classes)
        self.class_to_idx: Dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        samples: List[Tuple[str, str, int]] = []
        for label, name in enumerate(self.classes):
            class_dir = os.path.join(split_dir, name)
            if not os.path.isdir(class_dir):
                continue
            image_dir = os.path.join(class_dir, "images")
            mask_dir = os.path.join(class_dir, _MASK_FOLDERS[mask])
            if not os.path.isdir(mask_dir):
                raise FileNotFoundError(
                    f"no {_MASK_FOLDERS[mask]!r} folder in {class_dir}"
                )
            for file in sorted(os.listdir(image_dir)):
                if not file.lower().endswith(_EXTENSIONS):
                    continue
                mask_path = os.path.join(mask_dir, file)
                if not os.path.exists(mask_path):
                    raise FileNotFoundError(f"no mask for {file} in {mask_dir}")
                samples.append((os.path.join(image_dir, file), mask_path, label))
        where = f"{split_dir}/<class>/images"
        self._found(samples, f"no images under {where}", size, transform)

    def __getitem__(self, index: int) -> Sample:
        image_path, mask_path, label = self.samples[index]
        image = _load_image_file(image_path)
        mask = _load_mask_file(mask_path)
        if mask.shape != image.shape[-2:]:
            raise ValueError(
                f"{mask_path}: mask {tuple(mask.shape)} vs image {tuple(image.shape)}"
            )
        return _finish(image, label, mask, self.size, self.transform)


def _find_ci(root: str, name: str) -> str:
    """``root/name`` matched case-insensitively."""
    if not os.path.isdir(root):
        raise FileNotFoundError(root)
    for entry in os.listdir(root):
        if entry.lower() == name.lower() and os.path.isdir(os.path.join(root, entry)):
            return os.path.join(root, entry)
    raise FileNotFoundError(f"no split folder {name!r} in {root}")
