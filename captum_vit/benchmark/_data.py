"""Datasets of the benchmark: the synthetic benchmark (with its 2x2 grids) and
the real formats of :mod:`captum_vit.data`, resized and normalised for a model."""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, TypedDict

import torch
from torch import Tensor
from torch.utils.data import Dataset

#: Dataset kinds accepted by :func:`make_dataset` and ``--dataset``.
DATASETS = ("synthetic", "imagenet-seg", "imagenet", "cifar10")

#: Samples of the synthetic benchmark when no limit is given.
SYNTHETIC_DEFAULT_N = 128


class Batch(TypedDict):
    """One batch of :meth:`BenchmarkDataset.load`."""

    images: Tensor
    labels: Tensor
    masks: Optional[Tensor]
    boxes: Optional[Tensor]
    grid: Optional[Tuple[Tensor, Tensor, Tensor]]


class BenchmarkDataset:
    r"""A dataset prepared for a model, read in batches of indices.

    Attributes:
        name (str): what it is, in words.
        dataset (Dataset): items are :class:`captum_vit.data.Sample` or
            :class:`captum_vit.data.ClassificationSample` with normalised
            images.
        grid (Dataset or None): :class:`captum_vit.data.SyntheticGrid` of the
            same length (synthetic benchmark only), for the grid pointing game.
        has_masks (bool): items carry masks and boxes.
        n (int): number of samples used (``limit`` applied).
    """

    def __init__(
        self,
        name: str,
        dataset: Dataset,
        limit: Optional[int] = None,
        grid: Optional[Dataset] = None,
        has_masks: bool = False,
    ) -> None:
        self.name = name
        self.dataset = dataset
        self.grid = grid
        self.has_masks = has_masks
        n = len(dataset)  # type: ignore[arg-type]  # map-style: has __len__
        self.n = n if limit is None else min(int(limit), n)

    def __len__(self) -> int:
        return self.n

    def load(self, indices: Sequence[int], grid: bool = False) -> Batch:
        r"""Stack the samples ``indices`` into one batch.

        Args:
            indices (sequence of int): sample indices.
            grid (bool, optional): also load the 2x2 grids of these indices.
                Default: False

        Returns:
            dict: ``images`` ``(B, C, H, W)``, ``labels`` ``(B,)`` (``-1``:
            no label), ``masks`` and ``boxes`` (or None), ``grid`` (or None):
            ``(images, labels, cells)``.
        """
        items = [self.dataset[int(i)] for i in indices]
        batch: Batch = {
            "images": torch.stack([s.image for s in items]),
            "labels": torch.tensor([int(s.label) for s in items], dtype=torch.long),
            "masks": None,
            "boxes": None,
            "grid": None,
        }
        if self.has_masks:
            batch["masks"] = torch.stack([s.mask for s in items])
            batch["boxes"] = torch.stack([s.box for s in items])
        if grid and self.grid is not None:
            cells = [self.grid[int(i)] for i in indices]
            batch["grid"] = (
                torch.stack([g.image for g in cells]),
                torch.tensor([int(g.label) for g in cells], dtype=torch.long),
                torch.tensor([int(g.cell) for g in cells], dtype=torch.long),
            )
        return batch


def make_dataset(
    kind: str = "synthetic",
    path: Optional[str] = None,
    image_size: int = 64,
    transform: Optional[Callable] = None,
    limit: Optional[int] = None,
    seed: int = 0,
) -> BenchmarkDataset:
    r"""Build a benchmark dataset.

    Args:
        kind (str, optional): ``"synthetic"`` (the bundled benchmark, test
            split, with masks, boxes and 2x2 grids), ``"imagenet-seg"`` (the
            ``gtsegs_ijcv.mat`` file of ImageNet-Segmentation; no labels, the
            predicted class is explained), ``"imagenet"`` (an ImageFolder of
            validation images; classes are the sorted folder names, so the
            folder must hold all the model's classes) or ``"cifar10"`` (the
            ``cifar-10-batches-py`` folder, test batch).
            Default: ``"synthetic"``
        path (str, optional): file or folder of a real dataset. Default: None
        image_size (int, optional): side the images are resized to (the
            model's input). Default: 64
        transform (Callable, optional): normalisation applied to each
            ``[0, 1]`` image. Default: None
        limit (int, optional): use the first ``limit`` samples.
            Default: None (all; 128 for the synthetic benchmark)
        seed (int, optional): seed of the synthetic benchmark. Default: 0

    Returns:
        BenchmarkDataset

    Examples::

        >>> ds = make_dataset("synthetic", limit=8)
        >>> ds.load([0, 1])["images"].shape
        torch.Size([2, 3, 64, 64])
    """
    from .. import data

    if kind not in DATASETS:
        raise ValueError(f"unknown dataset {kind!r}; choose from {DATASETS}")
    if kind == "synthetic":
        if path is not None:
            raise ValueError("the synthetic benchmark takes no path")
        n = SYNTHETIC_DEFAULT_N if limit is None else int(limit)
        objects = data.SyntheticObjects(
            n, seed=seed, split="test", image_size=image_size, transform=transform
        )
        grid = data.SyntheticGrid(
            n, seed=seed, split="test", image_size=image_size, transform=transform
        )
        return BenchmarkDataset(
            f"synthetic benchmark (test split, seed {seed}, {image_size}px)",
            objects,
            limit,
            grid=grid,
            has_masks=True,
        )
    if path is None:
        raise ValueError(f"dataset {kind!r} needs a PATH")
    if kind == "imagenet-seg":
        seg = data.ImageNetSegmentation(path, size=image_size, transform=transform)
        return BenchmarkDataset(f"ImageNet-Segmentation {path}", seg, limit, None, True)
    if kind == "imagenet":
        folder = data.ImageNetFolder(path, size=image_size, transform=transform)
        return BenchmarkDataset(f"ImageNet folder {path}", folder, limit)
    cifar = data.CIFAR10(path, size=image_size, transform=transform)
    return BenchmarkDataset(f"CIFAR-10 test batch {path}", cifar, limit)


def batches(n: int, batch_size: int) -> List[List[int]]:
    """Consecutive index batches ``[0, bs), [bs, 2 bs), ...`` covering ``n``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
