"""Localisation criteria: IoU test, pointing game, grid pointing game."""

from __future__ import annotations

from typing import Literal, NamedTuple, Optional, Sequence, Tuple, Union, overload

import torch
import torch.nn.functional as F
from torch import Tensor

from .._maps import min_max
from ._utils import (
    _boxes_to_masks,
    _check_batch,
    _check_boxes,
    _check_mask,
    _check_tensor,
    _generator,
    _to_pixel_map,
)


def _image_size(
    attributions: Tensor,
    image_size: Optional[Sequence[int]],
    masks: Optional[Tensor],
) -> Tuple[int, int]:
    if masks is not None and isinstance(masks, Tensor) and masks.dim() >= 3:
        size = (int(masks.shape[-2]), int(masks.shape[-1]))
        if image_size is not None and tuple(image_size) != size:
            raise ValueError(
                f"image_size {tuple(image_size)} differs from the masks' size {size}"
            )
        return size
    if image_size is not None:
        if len(image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {tuple(image_size)}")
        return int(image_size[0]), int(image_size[1])
    return int(attributions.shape[-2]), int(attributions.shape[-1])


def _ground_truth(
    attributions: Tensor,
    masks: Optional[Tensor],
    boxes: Optional[Tensor],
    image_size: Optional[Sequence[int]],
) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
    """The ``(B, H, W)`` pixel map, the ``(B, H, W)`` bool ground truth (the
    masks, or the boxes drawn as masks) and ``(H, W)``."""
    if (masks is None) == (boxes is None):
        raise ValueError("give exactly one of masks and boxes")
    _check_batch(attributions, attributions.shape[0], "attributions")
    B = attributions.shape[0]
    size = _image_size(attributions, image_size, masks)
    if masks is not None:
        gt = _check_mask(masks, B, size, "masks")
    else:
        gt = _boxes_to_masks(_check_boxes(boxes, B), size)
    amap = _to_pixel_map(attributions, size, B)
    return amap, gt.to(amap.device), size


def _disc_dilate(mask: Tensor, radius: int) -> Tensor:
    if radius <= 0:
        return mask
    r = int(radius)
    ys, xs = torch.meshgrid(
        torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij"
    )
    kernel = ((ys**2 + xs**2) <= r * r).float().to(mask.device)[None, None]
    out = F.conv2d(mask.float()[:, None], kernel, padding=r)[:, 0]
    return out > 0.5


def pointing_game(
    attributions: Tensor,
    masks: Optional[Tensor] = None,
    boxes: Optional[Tensor] = None,
    tolerance: int = 0,
    image_size: Optional[Sequence[int]] = None,
) -> Tensor:
    r"""Pointing game of Zhang et al. (2018), "Top-down Neural Attention by
    Excitation Backprop", IJCV, https://arxiv.org/abs/1608.00507.

    A hit when the maximum of the (upsampled, channel-summed) attribution falls in
    the ground-truth mask or box, or within ``tolerance`` pixels of it (Zhang et al.
    use 15 pixels). When several pixels share the maximum, any of them in the region
    counts as a hit (as Quantus' ``PointingGame``). The accuracy over a dataset is
    the mean of the hits. **Higher is better.**

    .. math::

        \mathrm{hit}(x) = \mathbb{1}\Big[\exists\, p \in \arg\max_q a(q) :
        \operatorname{dist}(p, G) \le \tau\Big]

    Args:

        attributions (Tensor): ``(B, C, H, W)``, ``(B, 1, H, W)``, ``(B, H, W)`` or a
            token grid ``(B, gh, gw)`` (upsampled bilinearly to the image size).
        masks (Tensor, optional): ``(B, H, W)`` or ``(B, 1, H, W)`` ground-truth masks.
            Default: None
        boxes (Tensor, optional): ``(B, 4)`` ground-truth boxes ``(x_min, y_min,
            x_max, y_max)`` in pixels, max exclusive. Default: None
        tolerance (int, optional): tolerance in pixels (Euclidean). Default: 0
        image_size (tuple, optional): ``(H, W)`` of the image, needed with ``boxes``
            and a token-grid attribution. Default: None

    Returns:
        Tensor: ``(B,)`` float, 1.0 for a hit, 0.0 for a miss, NaN for an empty
        ground truth.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import pointing_game
        >>> a = torch.zeros(1, 4, 4); a[0, 1, 2] = 1.0
        >>> pointing_game(a, boxes=torch.tensor([[2, 0, 4, 2]]))
        tensor([1.])
    """
    if not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative int, got {tolerance!r}")
    amap, gt, _ = _ground_truth(attributions, masks, boxes, image_size)
    B = amap.shape[0]
    flat = amap.reshape(B, -1)
    is_max = (flat == flat.amax(dim=1, keepdim=True)).reshape_as(amap)
    region = _disc_dilate(gt, tolerance)
    hit = (is_max & region).reshape(B, -1).any(dim=1).float()
    hit[gt.reshape(B, -1).sum(dim=1) == 0] = float("nan")
    return hit


def _mask_box(mask: Tensor) -> Tuple[Tensor, Tensor]:
    """(B, H, W) bool -> (B, 4) float boxes (max exclusive) and (B,) non-empty flag."""
    B, H, W = mask.shape
    rows = mask.any(dim=2)
    cols = mask.any(dim=1)
    ar_h = torch.arange(H, device=mask.device)
    ar_w = torch.arange(W, device=mask.device)
    big = max(H, W) + 1
    y0 = torch.where(rows, ar_h, big).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1) + 1
    x0 = torch.where(cols, ar_w, big).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes, rows.any(dim=1)


def _box_iou(a: Tensor, b: Tensor) -> Tensor:
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(
        min=0
    )
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(
        min=0
    )
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a + area_b - inter
    return torch.where(
        union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union)
    )


@overload
def iou_test(
    attributions: Tensor,
    boxes: Optional[Tensor] = None,
    masks: Optional[Tensor] = None,
    threshold: float = 0.2,
    image_size: Optional[Sequence[int]] = None,
    return_boxes: Literal[False] = False,
) -> Tensor: ...


@overload
def iou_test(
    attributions: Tensor,
    boxes: Optional[Tensor] = None,
    masks: Optional[Tensor] = None,
    threshold: float = 0.2,
    image_size: Optional[Sequence[int]] = None,
    *,
    return_boxes: Literal[True],
) -> Tuple[Tensor, Tensor]: ...


@overload
def iou_test(
    attributions: Tensor,
    boxes: Optional[Tensor] = None,
    masks: Optional[Tensor] = None,
    threshold: float = 0.2,
    image_size: Optional[Sequence[int]] = None,
    return_boxes: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]: ...


def iou_test(
    attributions: Tensor,
    boxes: Optional[Tensor] = None,
    masks: Optional[Tensor] = None,
    threshold: float = 0.2,
    image_size: Optional[Sequence[int]] = None,
    return_boxes: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""IoU test of Niu et al. (2023), "R-Cut: Enhancing Explainability in Vision
    Transformers with Relationship Weighted Out and Cut" (Sensors 24(9), 2024,
    https://doi.org/10.3390/s24092695): the attribution is upsampled to the image,
    min-max normalised per image, thresholded at ``threshold`` (0.2), and the bounding box of the pixels that remain is compared with the
    ground-truth box by intersection over union. **Higher is better.**

    .. math::

        \hat a = \frac{a - \min a}{\max a - \min a}, \quad
        \hat B = \operatorname{bbox}\{p : \hat a(p) \ge \theta\}, \quad
        \mathrm{IoU} = \frac{|\hat B \cap B|}{|\hat B \cup B|}

    Boxes are ``(x_min, y_min, x_max, y_max)`` in pixel units with an exclusive max
    (pixel ``i`` covers ``[i, i + 1)``). A constant map keeps no pixel and scores 0.

    Args:

        attributions (Tensor): any Captum layout or a token grid ``(B, gh, gw)``.
        boxes (Tensor, optional): ``(B, 4)`` ground-truth boxes. Default: None
        masks (Tensor, optional): ``(B, H, W)`` ground-truth masks, whose bounding box
            is used. Default: None
        threshold (float, optional): threshold on the normalised map. Default: 0.2
        image_size (tuple, optional): ``(H, W)``, needed with ``boxes`` and a
            token-grid attribution. Default: None
        return_boxes (bool, optional): also return the ``(B, 4)`` predicted boxes.
            Default: False

    Returns:
        Tensor: ``(B,)`` IoU, or ``(iou, predicted_boxes)`` if ``return_boxes``.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import iou_test
        >>> a = torch.zeros(1, 4, 4); a[0, :2, :2] = 1.0
        >>> iou_test(a, boxes=torch.tensor([[0, 0, 2, 4]]))
        tensor([0.5000])
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    amap, gt, _ = _ground_truth(attributions, masks, boxes, image_size)
    norm = min_max(amap)
    flat = amap.reshape(amap.shape[0], -1)
    constant = flat.amax(dim=1) == flat.amin(dim=1)
    keep = (norm >= threshold) & ~constant[:, None, None]
    pred_boxes, nonempty = _mask_box(keep)
    if boxes is not None:
        gt_boxes = boxes.to(device=amap.device, dtype=torch.float)
    else:
        gt_boxes, _ = _mask_box(gt)
    iou = torch.where(nonempty, _box_iou(pred_boxes, gt_boxes), torch.zeros(()))
    return (iou, pred_boxes) if return_boxes else iou


def grid_pointing_game(
    attributions: Tensor,
    target_cell: Tensor,
    grid: Tuple[int, int] = (2, 2),
    image_size: Optional[Sequence[int]] = None,
) -> Tensor:
    r"""Grid pointing game of Böhle, Fritz and Schiele (2021), "Convolutional Dynamic
    Alignment Networks for Interpretable Classifications", CVPR,
    https://arxiv.org/abs/2104.00032.

    A grid of images of different classes is explained for the class of one cell;
    the score is the fraction of the positive attribution that falls in that cell.
    **Higher is better** (1 = all positive attribution in the right cell; about
    ``1 / n_cells`` for an uninformative map). Build the grids with
    :func:`make_grid_images`.

    .. math::

        \mathrm{GPG}(x) = \frac{\sum_{p \in \text{cell}_t} \max(a(p), 0)}
        {\sum_{p} \max(a(p), 0)}

    Args:

        attributions (Tensor): attributions of the grid images, any Captum layout or
            a token grid (upsampled bilinearly to ``image_size``).
        target_cell (Tensor): ``(B,)`` index of the explained cell, row-major.
        grid (tuple of int, optional): ``(rows, cols)`` of the grid. Default: (2, 2)
        image_size (tuple, optional): ``(H, W)`` of the grid image, needed for
            token-grid attributions. Default: None

    Returns:
        Tensor: ``(B,)`` fraction in [0, 1]; 0 when there is no positive
        attribution.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import grid_pointing_game
        >>> a = torch.zeros(1, 4, 4); a[0, :2, 2:] = 1.0; a[0, 3, 0] = 1.0
        >>> grid_pointing_game(a, torch.tensor([1]))
        tensor([0.8000])
    """
    gh, gw = int(grid[0]), int(grid[1])
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be two positive ints, got {grid!r}")
    _check_batch(attributions, attributions.shape[0], "attributions")
    B = attributions.shape[0]
    size = _image_size(attributions, image_size, None)
    H, W = size
    if H % gh or W % gw:
        raise ValueError(f"the image size {size} is not divisible by the grid {grid}")
    amap = _to_pixel_map(attributions, size, B).clamp(min=0)
    target_cell = torch.as_tensor(target_cell, device=amap.device).reshape(-1).long()
    if target_cell.numel() != B:
        raise ValueError(f"target_cell needs {B} entries, got {target_cell.numel()}")
    if target_cell.min() < 0 or target_cell.max() >= gh * gw:
        raise ValueError(f"target_cell must lie in [0, {gh * gw})")
    cells = amap.reshape(B, gh, H // gh, gw, W // gw).sum(dim=(2, 4)).reshape(B, -1)
    total = cells.sum(dim=1)
    inside = cells.gather(1, target_cell[:, None])[:, 0]
    return torch.where(
        total > 0, inside / total.clamp(min=1e-30), torch.zeros_like(total)
    )


class GridImages(NamedTuple):
    """Grids built by :func:`make_grid_images`.

    Attributes:
        images (Tensor): ``(M, C, H', W')`` grid images.
        target_cell (Tensor): ``(M,)`` row-major index of the cell to explain.
        targets (Tensor): ``(M,)`` class of that cell (the ``target`` to explain).
        indices (Tensor): ``(M, n_cells)`` index of the source image in each cell.
    """

    images: Tensor
    target_cell: Tensor
    targets: Tensor
    indices: Tensor


def make_grid_images(
    images: Tensor,
    labels: Tensor,
    grid: Tuple[int, int] = (2, 2),
    n_grids: Optional[int] = None,
    resize: bool = True,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> GridImages:
    r"""Build the image grids of the grid pointing game (Böhle et al. 2021): each grid
    holds ``rows * cols`` images of pairwise different classes, and one random cell is
    the one to explain.

    Args:

        images (Tensor): ``(N, C, H, W)`` source images.
        labels (Tensor): ``(N,)`` their classes.
        grid (tuple of int, optional): ``(rows, cols)``. Default: (2, 2)
        n_grids (int, optional): number of grids; ``None`` means
            ``N // (rows * cols)``. Default: None
        resize (bool, optional): resize each grid back to ``(H, W)`` (bilinear,
            antialiased) so that a fixed-size ViT accepts it; ``False`` returns
            ``(rows * H, cols * W)`` grids. Default: True
        seed (int, optional): seed of the draw. Default: None
        generator (torch.Generator, optional): generator (instead of ``seed``).
            Default: None

    Returns:
        :class:`GridImages`: ``images``, ``target_cell``, ``targets``, ``indices``.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import make_grid_images
        >>> x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 4
        >>> g = make_grid_images(x, y, seed=0)
        >>> g.images.shape, g.targets.shape
        (torch.Size([2, 3, 8, 8]), torch.Size([2]))
    """
    if _check_tensor(images, "images").dim() != 4:
        raise ValueError(
            f"images must be (N, C, H, W), got shape {tuple(images.shape)}"
        )
    labels = torch.as_tensor(labels).reshape(-1).long()
    N, C, H, W = images.shape
    if labels.numel() != N:
        raise ValueError(f"labels has {labels.numel()} entries for {N} images")
    gh, gw = int(grid[0]), int(grid[1])
    n_cells = gh * gw
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be two positive ints, got {grid!r}")
    if labels.unique().numel() < n_cells:
        raise ValueError(
            f"a {gh}x{gw} grid needs images of at least {n_cells} different classes"
        )
    gen = _generator(seed, generator)
    if n_grids is None:
        n_grids = N // n_cells
    if not isinstance(n_grids, int) or n_grids < 1:
        raise ValueError(
            "n_grids must be a positive int (or more images are needed), got "
            f"{n_grids!r}"
        )
    labels_cpu = labels.cpu()
    chosen = []
    for _ in range(n_grids):
        perm = torch.randperm(N, generator=gen)
        picked, seen = [], set()
        for i in perm.tolist():
            lab = int(labels_cpu[i])
            if lab not in seen:
                seen.add(lab)
                picked.append(i)
                if len(picked) == n_cells:
                    break
        chosen.append(picked)
    indices = torch.tensor(chosen, dtype=torch.long)
    cells = torch.randint(0, n_cells, (n_grids,), generator=gen)
    tiles = images[indices.to(images.device)]  # (M, n_cells, C, H, W)
    grids = (
        tiles.reshape(n_grids, gh, gw, C, H, W)
        .permute(0, 3, 1, 4, 2, 5)
        .reshape(n_grids, C, gh * H, gw * W)
    )
    if resize:
        grids = F.interpolate(
            grids.float(),
            size=(H, W),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        ).to(images.dtype)
    targets = labels_cpu[indices[torch.arange(n_grids), cells]]
    dev = images.device
    return GridImages(grids, cells.to(dev), targets.to(dev), indices.to(dev))


__all__ = [
    "pointing_game",
    "iou_test",
    "grid_pointing_game",
    "make_grid_images",
    "GridImages",
]
