"""Segmentation test (Chefer et al. 2021a; Chen et al. 2023)."""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from .._batching import select_rows
from .._maps import min_max
from .._targets import TargetType, check_target_range, format_target
from ._utils import (
    _check_batch,
    _check_inputs,
    _check_mask,
    _forward,
    _to_pixel_map,
)


class SegmentationResult(NamedTuple):
    """Per-image results of :func:`segmentation_test`.

    Attributes:
        pixel_accuracy (Tensor): ``(B,)`` fraction of correctly labelled pixels.
        iou (Tensor): ``(B, 2)`` IoU of the background and foreground classes.
        miou (Tensor): ``(B,)`` mean of the two IoUs.
        ap (Tensor): ``(B,)`` average precision.
        f1 (Tensor): ``(B,)`` F1 of the foreground (averaged over thresholds if
            ``f1_thresholds`` was given).
        correct (Tensor): ``(B,)`` correctly labelled pixels.
        labeled (Tensor): ``(B,)`` labelled pixels.
        intersection (Tensor): ``(B, 2)`` per-class intersection areas.
        union (Tensor): ``(B, 2)`` per-class union areas.

    Use :meth:`summary` (or :func:`summarize_segmentation` over several batches) for
    the dataset-level numbers of Chefer et al.'s ``imagenet_seg_eval.py``.
    """

    pixel_accuracy: Tensor
    iou: Tensor
    miou: Tensor
    ap: Tensor
    f1: Tensor
    correct: Tensor
    labeled: Tensor
    intersection: Tensor
    union: Tensor

    def summary(self) -> Dict[str, float]:
        """Dataset-level pixel accuracy, mIoU, mAP and mF1 of these images."""
        return summarize_segmentation([self])


def summarize_segmentation(results: Sequence[SegmentationResult]) -> Dict[str, float]:
    r"""Aggregate :class:`SegmentationResult` batches as Chefer et al.'s
    ``imagenet_seg_eval.py`` does.

    Pixel accuracy is :math:`\sum \text{correct} / \sum \text{labeled}` over all
    pixels of all images; the IoU of each class is the ratio of its summed
    intersections and unions and mIoU their mean; mAP and mF1 are means of the
    per-image values (images left out by ``correct_only`` count nowhere).

    Args:

        results (sequence of SegmentationResult): per-batch results.

    Returns:
        dict: ``pixel_accuracy``, ``miou``, ``map``, ``mf1``.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import segmentation_test, summarize_segmentation
        >>> a = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
        >>> m = torch.tensor([[[0, 1], [0, 1]]])
        >>> summarize_segmentation([segmentation_test(a, m)])["miou"]
        1.0
    """
    if len(results) == 0:
        raise ValueError("results is empty")
    correct = torch.cat([r.correct for r in results]).double().sum()
    labeled = torch.cat([r.labeled for r in results]).double().sum()
    inter = torch.cat([r.intersection for r in results]).double().sum(dim=0)
    union = torch.cat([r.union for r in results]).double().sum(dim=0)
    eps = torch.finfo(torch.float64).eps
    return {
        "pixel_accuracy": float(correct / (labeled + eps)),
        "miou": float((inter / (union + eps)).mean()),
        "map": float(torch.cat([r.ap for r in results]).double().nanmean()),
        "mf1": float(torch.cat([r.f1 for r in results]).double().nanmean()),
    }


def _average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """Average precision of one ranking (scikit-learn's definition), 0 if no
    positive: sum over distinct thresholds of (R_k - R_{k-1}) * P_k."""
    labels = labels.double()
    n_pos = labels.sum()
    if n_pos == 0:
        return torch.zeros((), dtype=torch.float64)
    order = torch.sort(scores, descending=True, stable=True).indices
    s = scores[order]
    y = labels[order]
    tps = torch.cumsum(y, 0)
    fps = torch.cumsum(1 - y, 0)
    last = torch.cat(
        [torch.nonzero(s[1:] != s[:-1]).reshape(-1), torch.tensor([s.numel() - 1])]
    )
    tps, fps = tps[last], fps[last]
    precision = tps / (tps + fps)
    recall = tps / n_pos
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return ((recall - prev) * precision).sum()


def _f1(pred: Tensor, gt: Tensor) -> Tensor:
    tp = (pred & gt).sum(dim=-1).double()
    fp = (pred & ~gt).sum(dim=-1).double()
    fn = (~pred & gt).sum(dim=-1).double()
    den = 2 * tp + fp + fn
    return torch.where(den > 0, 2 * tp / den.clamp(min=1), torch.zeros_like(den))


def segmentation_test(
    attributions: Tensor,
    masks: Tensor,
    f1_thresholds: Optional[Sequence[float]] = None,
    correct_only: bool = False,
    forward_func: Optional[Callable] = None,
    inputs: Optional[Tensor] = None,
    target: TargetType = None,
    additional_forward_args: Any = None,
) -> SegmentationResult:
    r"""Segmentation test of Chefer, Gur and Wolf (2021), "Transformer
    Interpretability Beyond Attention Visualization", CVPR,
    https://arxiv.org/abs/2012.09838 (``baselines/ViT/imagenet_seg_eval.py``), also
    used by Chen et al. (2023), "Beyond Intuition: Rethinking Token Attributions
    inside Transformers", TMLR, https://openreview.net/forum?id=rm0zIzlhcX.

    The attribution is upsampled to the mask size (bilinear, for token grids) and
    min-max normalised per image to :math:`\hat a \in [0, 1]`. A pixel is labelled
    foreground when :math:`\hat a` exceeds its mean (the mean-value threshold):

    .. math::

        \hat y(p) = \mathbb{1}[\hat a(p) > \bar{\hat a}], \quad
        \mathrm{PixAcc} = \frac{|\{p : \hat y(p) = y(p)\}|}{HW}, \quad
        \mathrm{mIoU} = \frac{1}{2} \sum_{c \in \{0, 1\}}
        \frac{|\hat y = c \,\wedge\, y = c|}{|\hat y = c \,\vee\, y = c|}

    AP is scikit-learn's average precision of the two-class scoring Chefer et al.
    use: background scores :math:`1 - \hat a` against :math:`1 - y` and foreground
    scores :math:`\hat a` against :math:`y`, pooled,
    :math:`\mathrm{AP} = \sum_k (R_k - R_{k-1}) P_k`. F1 is the foreground F1 of the
    mean-threshold mask; with ``f1_thresholds`` it is averaged over the masks
    :math:`\hat a > \theta` for each threshold :math:`\theta` instead. A constant
    map labels everything background, as NaNs are zeroed in their code.
    **Higher is better** for all four.

    Args:

        attributions (Tensor): ``(B, C, H, W)``, ``(B, 1, H, W)``, ``(B, H, W)`` or a
            token grid ``(B, gh, gw)``; channels summed.
        masks (Tensor): ``(B, H, W)`` or ``(B, 1, H, W)`` binary ground truth.
        f1_thresholds (sequence of float, optional): thresholds on the normalised map
            to average F1 over; ``None`` uses the mean-value threshold (Chefer et
            al.). Default: None
        correct_only (bool, optional): restrict the test to the images the model
            classifies correctly (``forward_func(inputs)``'s top-1 class is
            ``target``): the per-image values of the other images are NaN and
            their counts 0, so :func:`summarize_segmentation` pools the correct
            images only. Needs ``forward_func``, ``inputs`` and ``target``.
            Default: False
        forward_func (Callable, optional): the model, for ``correct_only``.
            Default: None
        inputs (Tensor, optional): ``(B, C, H, W)`` images, for
            ``correct_only``. Default: None
        target (int, tuple, Tensor, list or array, optional): the labels
            (Captum's target forms), for ``correct_only``. Default: None
        additional_forward_args (Any, optional): extra forward arguments, for
            ``correct_only``. Default: None

    Returns:
        :class:`SegmentationResult`: per-image values and the counts for
        :func:`summarize_segmentation`.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import segmentation_test
        >>> a = torch.tensor([[[0.0, 1.0], [0.2, 0.9]]])
        >>> m = torch.tensor([[[0, 1], [0, 1]]])
        >>> segmentation_test(a, m).pixel_accuracy
        tensor([1.])
    """
    _check_batch(attributions, attributions.shape[0], "attributions")
    B = attributions.shape[0]
    gt = _check_mask(masks, B, None, "masks")
    size = tuple(gt.shape[-2:])
    amap = _to_pixel_map(attributions, size, B).double()
    gt = gt.to(amap.device)
    flat = amap.reshape(B, -1)
    norm = min_max(flat)
    span = flat.amax(dim=1, keepdim=True) - flat.amin(dim=1, keepdim=True)
    constant = (span <= 0).expand_as(flat)
    y = gt.reshape(B, -1)
    pred = (norm > norm.mean(dim=1, keepdim=True)) & ~constant

    correct = (pred == y).sum(dim=1)
    labeled = torch.full_like(correct, y.shape[1])
    inter = torch.stack([(~pred & ~y).sum(1), (pred & y).sum(1)], dim=1)
    union = torch.stack([(~pred | ~y).sum(1), (pred | y).sum(1)], dim=1)
    iou = inter.double() / union.double().clamp(min=1)
    iou = torch.where(union > 0, iou, torch.ones_like(iou))

    ap = torch.stack(
        [
            _average_precision(
                torch.cat([1 - norm[b], norm[b]]).cpu()
                if not constant[b, 0]
                else torch.zeros(2 * norm.shape[1], dtype=norm.dtype),
                torch.cat([~y[b], y[b]]).cpu(),
            )
            for b in range(B)
        ]
    ).to(amap.device)

    if f1_thresholds is None:
        f1 = _f1(pred, y)
    else:
        ths = [float(t) for t in f1_thresholds]
        if not ths:
            raise ValueError("f1_thresholds is empty")
        f1 = torch.stack([_f1((norm > t) & ~constant, y) for t in ths]).mean(0)

    res = SegmentationResult(
        pixel_accuracy=(correct.double() / labeled.double()).float(),
        iou=iou.float(),
        miou=iou.mean(dim=1).float(),
        ap=ap.float(),
        f1=f1.float(),
        correct=correct,
        labeled=labeled,
        intersection=inter,
        union=union,
    )
    if correct_only:
        keep = _classified_correctly(
            forward_func, inputs, target, B, additional_forward_args
        ).to(amap.device)
        res = SegmentationResult(
            *(
                torch.where(
                    keep.reshape(-1, *[1] * (v.dim() - 1)),
                    v,
                    torch.nan if v.is_floating_point() else torch.zeros_like(v),
                )
                for v in res
            )
        )
    return res


def _classified_correctly(
    forward_func: Optional[Callable],
    inputs: Optional[Tensor],
    target: TargetType,
    batch_size: int,
    additional_forward_args: Any,
) -> Tensor:
    """``(B,)`` bool: the model's top-1 class on ``inputs`` is ``target``."""
    if forward_func is None or inputs is None or target is None:
        raise ValueError("correct_only=True needs forward_func, inputs and target")
    inputs = _check_inputs(inputs)
    if inputs.shape[0] != batch_size:
        raise ValueError(f"inputs has {inputs.shape[0]} images for {batch_size} maps")
    labels = format_target(target, batch_size, device=inputs.device)
    assert labels is not None  # target is not None
    args = select_rows(additional_forward_args, torch.arange(batch_size), batch_size)
    with torch.no_grad():
        out = _forward(forward_func, inputs, args)
    check_target_range(labels, out.shape[1])
    return out.argmax(dim=1) == labels
