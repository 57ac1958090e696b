r"""Loaders for ImageNet validation folders and for ImageNet-Segmentation
(``gtsegs_ijcv.mat``)."""

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import (
    ClassificationSample,
    Sample,
    SizeType,
    _finish,
    _load_image_file,
    _resize_image,
    _to_image_tensor,
)

#: File extensions :class:`ImageNetFolder` reads (compared lower-case).
IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


class ImageNetFolder(Dataset):
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
        self.samples: List[Tuple[str, int]] = []
        for name in folders:
            folder = os.path.join(root, name)
            for file in sorted(os.listdir(folder)):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    self.samples.append(
                        (os.path.join(folder, file), class_to_idx[name])
                    )
        if not self.samples:
            raise FileNotFoundError(f"no images with {IMAGE_EXTENSIONS} under {root}")
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> ClassificationSample:
        path, label = self.samples[index]
        image = _resize_image(_load_image_file(path), self.size)
        if self.transform is not None:
            image = self.transform(image)
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

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def _handle(self):
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


def _import_h5py():
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "ImageNetSegmentation reads gtsegs_ijcv.mat with h5py: "
            "pip install 'captum-vit[data]'"
        ) from err
    return h5py
