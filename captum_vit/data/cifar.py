r"""Loader for CIFAR-10 in its python pickle format
(``cifar-10-batches-py``)."""

import os
import pickle
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import (
    ClassificationSample,
    SizeType,
    _apply_transform,
    _resize_image,
)

_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_FILES = ("test_batch",)


def _get(d: Dict[Any, Any], key: str) -> Any:
    """Entry of a CIFAR pickle dict, whose keys are bytes (python 2 pickles
    read with ``encoding="bytes"``) or str."""
    if key in d:
        return d[key]
    return d[key.encode("ascii")]


def _unpickle(path: str) -> Dict[Any, Any]:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


class CIFAR10(Dataset):
    r"""CIFAR-10 from the python batches of Krizhevsky's
    ``cifar-10-python.tar.gz``, extracted: ``data_batch_1`` ... ``data_batch_5``
    (train), ``test_batch`` (test) and ``batches.meta`` (class names).

    Each batch is a pickled dict with ``data`` (uint8 ``(N, 3072)``, the red,
    green and blue planes of a 32x32 image, row-major) and ``labels``. The
    files are pickles: only read files you trust.

    Args:
        root (str): the ``cifar-10-batches-py`` folder.
        train (bool, optional): read the five training batches instead of the
            test batch.
            Default: False
        size (int or tuple[int, int], optional): resize every image to this
            ``(H, W)`` (bilinear), for example 224 for an ImageNet ViT.
            Default: None (32x32)
        transform (Callable, optional): applied to each float image tensor
            ``(3, H, W)`` in ``[0, 1]`` after resizing.
            Default: None

    Examples::

        >>> ds = CIFAR10("data/cifar-10-batches-py")
        >>> image, label = ds[0]
        >>> image.shape, ds.classes[label]
        (torch.Size([3, 32, 32]), 'cat')
    """

    def __init__(
        self,
        root: str,
        train: bool = False,
        size: Optional[SizeType] = None,
        transform: Optional[Callable] = None,
    ) -> None:
        self.root = root
        self.train = train
        data: List[np.ndarray] = []
        labels: List[int] = []
        for name in _TRAIN_FILES if train else _TEST_FILES:
            batch = _unpickle(os.path.join(root, name))
            data.append(np.asarray(_get(batch, "data"), dtype=np.uint8))
            labels.extend(int(v) for v in _get(batch, "labels"))
        self.data = np.concatenate(data).reshape(-1, 3, 32, 32)
        self.labels: List[int] = labels
        if len(self.labels) != len(self.data):
            raise ValueError(f"{len(self.data)} images but {len(labels)} labels")
        meta_path = os.path.join(root, "batches.meta")
        if os.path.exists(meta_path):
            names = _get(_unpickle(meta_path), "label_names")
            self.classes: List[str] = [
                n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names
            ]
        else:
            self.classes = [str(i) for i in range(10)]
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> ClassificationSample:
        image = torch.from_numpy(self.data[index]).float().div_(255.0)
        image = _resize_image(image, self.size)
        image = _apply_transform(self.transform, image)
        return ClassificationSample(image, self.labels[index])
