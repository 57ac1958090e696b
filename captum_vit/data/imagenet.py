r"""Loaders for ImageNet validation folders, ImageNet-Segmentation
(``gtsegs_ijcv.mat``) and ImageNet-S (semantic masks as PNG)."""

import os
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import (
    ClassificationSample,
    Sample,
    SizeType,
    _apply_transform,
    _finish,
    _ImageFiles,
    _load_image_file,
    _read_rgb,
    _resize_image,
    _resize_mask,
    _to_image_tensor,
)

#: File extensions :class:`ImageNetFolder` reads (compared lower-case).
IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


class ImageNetFolder(_ImageFiles):
    r"""ImageNet validation images in the ImageFolder layout:
    ``root/<synset>/<image>.JPEG``, one folder per class.

    Without ``class_to_idx`` the classes are the sorted folder names, indexed
    from 0 (as ``torchvision.datasets.ImageFolder`` does). Pass the synset to
    index mapping of your model (for ImageNet-1k: ``n01440764 -> 0``, ...)
    when the folders hold a subset of the classes, so that labels match the
    model's outputs; folders missing from the mapping are an error.

    Args:
        root (str): folder holding one sub-folder per class.
        class_to_idx (dict[str, int], optional): synset (folder name) to class
            index. Default: None (sorted folder names, indexed from 0)
        size (int or tuple[int, int], optional): resize every image to this
            ``(H, W)`` (bilinear) so that batches stack.
            Default: None
        transform (Callable, optional): applied to each float image tensor
            ``(3, H, W)`` in ``[0, 1]`` after resizing.
            Default: None

    Examples::

        >>> ds = ImageNetFolder("/data/imagenet/val", size=224)
        >>> image, label = ds[0]
        >>> ds.classes[label]
        'n01440764'
    """

    def __init__(
        self,
        root: str,
        class_to_idx: Optional[Dict[str, int]] = None,
        size: Optional[SizeType] = None,
        transform: Optional[Callable] = None,
    ) -> None:
        self.root = root
        folders = sorted(
            d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
        )
        if not folders:
            raise FileNotFoundError(f"no class folders in {root}")
        if class_to_idx is None:
            class_to_idx = {name: i for i, name in enumerate(folders)}
        else:
            missing = [d for d in folders if d not in class_to_idx]
            if missing:
                raise KeyError(f"folders not in class_to_idx: {missing[:5]}")
            class_to_idx = dict(class_to_idx)
        self.class_to_idx: Dict[str, int] = class_to_idx
        self.classes: List[str] = sorted(class_to_idx, key=class_to_idx.__getitem__)
        samples: List[Tuple[str, int]] = []
        for name in folders:
            folder = os.path.join(root, name)
            for file in sorted(os.listdir(folder)):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((os.path.join(folder, file), class_to_idx[name]))
        nothing = f"no images with {IMAGE_EXTENSIONS} under {root}"
        self._found(samples, nothing, size, transform)

    def __getitem__(self, index: int) -> ClassificationSample:
        path, label = self.samples[index]
        image = _resize_image(_load_image_file(path), self.size)
        image = _apply_transform(self.transform, image)
        return ClassificationSample(image, label)


class ImageNetSegmentation(Dataset):
    r"""ImageNet-Segmentation: 4,276 ImageNet validation images with
    foreground masks (Guillaumin, Küttel, Ferrari, "ImageNet Auto-Annotation
    with Segmentation Propagation", IJCV 2014), the set Chefer et al. (CVPR
    2021) use for their segmentation tests.

    Reads the MATLAB v7.3 (HDF5) file ``gtsegs_ijcv.mat``: ``/value/img`` is
    an ``(N, 1)`` array of object references to uint8 images stored
    column-major as ``(3, W, H)``; ``/value/gt`` is an ``(N, 1)`` array of
    references to ``(1, 1)`` cells, each holding a reference to a ``(W, H)``
    mask (non-zero on the object). The file has no class labels: ``label`` is
    ``-1`` unless ``labels`` is given (Chefer et al. explain the predicted
    class). Needs ``h5py`` (``pip install 'captum-vit[data]'``).

    Args:
        path (str): the ``gtsegs_ijcv.mat`` file.
        size (int or tuple[int, int], optional): resize image (bilinear) and
            mask (nearest) to this ``(H, W)``; Chefer et al. use 224.
            Default: None (native sizes, which differ between images)
        transform (Callable, optional): applied to each float image tensor
            ``(3, H, W)`` in ``[0, 1]`` after resizing.
            Default: None
        labels (Sequence[int], optional): a class label per image.
            Default: None (every label is ``-1``)

    Examples::

        >>> ds = ImageNetSegmentation("gtsegs_ijcv.mat", size=224)
        >>> s = ds[0]
        >>> s.image.shape, s.mask.shape
        (torch.Size([3, 224, 224]), torch.Size([224, 224]))
    """

    def __init__(
        self,
        path: str,
        size: Optional[SizeType] = None,
        transform: Optional[Callable] = None,
        labels: Optional[Sequence[int]] = None,
    ) -> None:
        h5py = _import_h5py()
        self.path = path
        with h5py.File(path, "r") as f:
            n_img, n_gt = len(f["value/img"]), len(f["value/gt"])
        if n_img != n_gt:
            raise ValueError(f"{path}: {n_img} images but {n_gt} masks")
        if labels is not None and len(labels) != n_img:
            raise ValueError(f"{len(labels)} labels for {n_img} images")
        self._len = n_img
        self.labels = None if labels is None else [int(v) for v in labels]
        self.size = size
        self.transform = transform
        self._file = None  # opened lazily, once per process (DataLoader workers)

    def __len__(self) -> int:
        return self._len

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def _handle(self) -> Any:  # an h5py.File (h5py is untyped)
        if self._file is None:
            self._file = _import_h5py().File(self.path, "r")
        return self._file

    def __getitem__(self, index: int) -> Sample:
        if not -self._len <= index < self._len:
            raise IndexError(f"index {index} out of range for {self._len} images")
        index %= self._len
        f = self._handle()
        img = np.asarray(f[f["value/img"][index, 0]]).transpose(2, 1, 0)
        cell = f[f["value/gt"][index, 0]]
        gt = np.asarray(f[cell[0, 0]]).transpose(1, 0)
        mask = torch.from_numpy(np.ascontiguousarray(gt != 0))
        label = -1 if self.labels is None else self.labels[index]
        return _finish(_to_image_tensor(img), label, mask, self.size, self.transform)

    def close(self) -> None:
        """Close the HDF5 file (it reopens on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None


#: Class id of the pixels that ImageNet-S masks leave out of evaluation.
IMAGENET_S_IGNORE = 1000


def decode_imagenet_s(rgb: np.ndarray) -> np.ndarray:
    r"""Class ids of an ImageNet-S mask: ``id = R + 256 * G``.

    ImageNet-S stores its masks as RGB PNG images whose red and green channels
    encode the class id (0: other, 1 to 919: the ImageNet-S classes,
    :data:`IMAGENET_S_IGNORE`: ignored pixels); blue is 0.

    Args:
        rgb (ndarray): uint8 ``(H, W, 3)`` (or ``(H, W, 4)``) mask pixels.

    Returns:
        ndarray: int64 ``(H, W)`` class ids.

    Examples::

        >>> rgb = np.zeros((1, 2, 3), dtype=np.uint8)
        >>> rgb[0, 1] = (232, 3, 0)  # 232 + 3 * 256
        >>> decode_imagenet_s(rgb)
        array([[   0, 1000]])
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) RGB mask, got shape {rgb.shape}")
    return rgb[:, :, 0].astype(np.int64) + 256 * rgb[:, :, 1].astype(np.int64)


class ImageNetS(_ImageFiles):
    r"""ImageNet-S (Gao et al., "Large-scale Unsupervised Semantic
    Segmentation", TPAMI 2022): ImageNet images with semantic masks stored as
    PNG, the format of the LeGrad evaluation.

    Reads the published layout of one ImageNet-S subset (``ImageNetS919``,
    ``ImageNetS300`` or ``ImageNetS50``)::

        root/validation/<wnid>/<name>.JPEG
        root/validation-segmentation/<wnid>/<name>.png

    (``split="train-semi"``: ``train-semi/`` and ``train-semi-segmentation/``).
    A mask's class id is ``R + 256 * G`` (:func:`decode_imagenet_s`): 0 is
    "other", :data:`IMAGENET_S_IGNORE` marks pixels left out of evaluation and
    ``k >= 1`` is the ``k``-th wnid of the subset's categories in sorted order.
    Every mask has an image of the same name (any of
    :data:`IMAGE_EXTENSIONS`).

    A sample's ``mask`` is ``True`` on the pixels of the image's own class
    (its folder's wnid); ``label`` is that class: ``id - 1`` (the index into
    :attr:`classes`) or, with ``class_to_idx``, the model's index of the wnid
    (e.g. the ImageNet-1k index). :meth:`segmentation` returns the full id map.

    Args:
        root (str): the subset's folder, e.g. ``.../ImageNetS919``.
        split (str, optional): ``"validation"`` or ``"train-semi"``.
            Default: ``"validation"``
        categories (Sequence[str], optional): the subset's wnids; id ``k`` is
            ``sorted(categories)[k - 1]``. Pass the full list when the folders
            hold only some classes (the ImageNet-S repository ships it as
            ``data/categories/ImageNetS_categories_im919.txt``).
            Default: None (the sorted class folders of the split)
        class_to_idx (dict[str, int], optional): wnid to label, for a model
            whose outputs are indexed otherwise.
            Default: None (``label = id - 1``)
        size (int or tuple[int, int], optional): resize image (bilinear) and
            masks (nearest) to this ``(H, W)``.
            Default: None (native sizes)
        transform (Callable, optional): applied to each float image tensor
            ``(3, H, W)`` in ``[0, 1]`` after resizing.
            Default: None

    Examples::

        >>> ds = ImageNetS("/data/imagenet-s/ImageNetS919", size=224)
        >>> image, label, mask, box = ds[0]
        >>> ds.classes[label], mask.shape
        ('n01443537', torch.Size([224, 224]))
        >>> ids = ds.segmentation(0)  # int64 (224, 224): 0, class ids, 1000
    """

    def __init__(
        self,
        root: str,
        split: str = "validation",
        categories: Optional[Sequence[str]] = None,
        class_to_idx: Optional[Dict[str, int]] = None,
        size: Optional[SizeType] = None,
        transform: Optional[Callable] = None,
    ) -> None:
        if split not in ("validation", "train-semi"):
            raise ValueError(
                f"split must be 'validation' or 'train-semi', got {split!r}"
            )
        image_root = os.path.join(root, split)
        mask_root = os.path.join(root, f"{split}-segmentation")
        if not os.path.isdir(mask_root):
            raise FileNotFoundError(f"no mask folder {mask_root}")
        folders = sorted(
            d
            for d in os.listdir(mask_root)
            if os.path.isdir(os.path.join(mask_root, d))
        )
        if not folders:
            raise FileNotFoundError(f"no class folders in {mask_root}")
        self.classes: List[str] = sorted(categories) if categories else folders
        self.class_ids: Dict[str, int] = {w: i + 1 for i, w in enumerate(self.classes)}
        unknown = [d for d in folders if d not in self.class_ids]
        if unknown:
            raise KeyError(f"class folders not in categories: {unknown[:5]}")
        if class_to_idx is not None:
            missing = [d for d in folders if d not in class_to_idx]
            if missing:
                raise KeyError(f"class folders not in class_to_idx: {missing[:5]}")
        self.class_to_idx = None if class_to_idx is None else dict(class_to_idx)
        samples: List[Tuple[str, str, str]] = []
        for wnid in folders:
            images: Dict[str, str] = {}
            image_dir = os.path.join(image_root, wnid)
            if os.path.isdir(image_dir):
                for file in os.listdir(image_dir):
                    stem, ext = os.path.splitext(file)
                    if ext.lower() in IMAGE_EXTENSIONS:
                        images[stem] = os.path.join(image_dir, file)
            for file in sorted(os.listdir(os.path.join(mask_root, wnid))):
                stem, ext = os.path.splitext(file)
                if ext.lower() != ".png":
                    continue
                if stem not in images:
                    raise FileNotFoundError(
                        f"no image for mask {wnid}/{file} in {image_dir}"
                    )
                mask_path = os.path.join(mask_root, wnid, file)
                samples.append((images[stem], mask_path, wnid))
        self._found(samples, f"no .png masks under {mask_root}", size, transform)
        self.root = root
        self.split = split

    def _ids(self, index: int) -> np.ndarray:
        return decode_imagenet_s(_read_rgb(self.samples[index][1]))

    def segmentation(self, index: int) -> torch.Tensor:
        r"""The full class-id map of a sample's mask.

        Args:
            index (int): sample index.

        Returns:
            Tensor: int64 ``(H, W)`` ids (0: other, ``k``: ``classes[k - 1]``,
            :data:`IMAGENET_S_IGNORE`: ignored), resized (nearest) to ``size``.
        """
        ids = torch.from_numpy(self._ids(index))
        if self.size is None:
            return ids
        return _resize_mask(ids, self.size)

    def __getitem__(self, index: int) -> Sample:
        image_path, _, wnid = self.samples[index]
        mask = torch.from_numpy(self._ids(index) == self.class_ids[wnid])
        if self.class_to_idx is None:
            label = self.class_ids[wnid] - 1
        else:
            label = self.class_to_idx[wnid]
        image = _load_image_file(image_path)
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            raise ValueError(
                f"{image_path}: image {tuple(image.shape[-2:])} but mask "
                f"{tuple(mask.shape)}"
            )
        return _finish(image, label, mask, self.size, self.transform)


def _import_h5py() -> ModuleType:
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "ImageNetSegmentation reads gtsegs_ijcv.mat with h5py: "
            "pip install 'captum-vit[data]'"
        ) from err
    return h5py
