r"""Open-vocabulary localisation: where in an image with several objects does
a map for a prompt naming *one* of them point?

The evaluation protocol of LeGrad (Bousselham et al. 2024, Sec. 4, on
OpenImages V7 and ImageNet-S) on images with per-object masks: every (image,
object) pair is one sample, explained for the prompt that names the object
(``target`` = its prompt's index in a similarity model over all prompts,
:func:`captum_vit.text_similarity`) and scored against *that object's* mask
(the other objects count as background):

* :func:`object_pairs` expands a batch of images with per-object labels and
  masks (:class:`captum_vit.data.SyntheticScenes`) into those pairs;
* :func:`threshold_iou`: the map min-max normalised per sample and
  thresholded at 0.5 (LeGrad's binarisation), the IoU of the foreground with
  the object's mask; its mean over pairs is the mIoU;
* the pointing game (:func:`~captum_vit.metrics.pointing_game`) of each pair;
* deletion and insertion on the similarity score itself (no softmax over
  the prompts): how fast the prompt's score falls (rises) when the patches the
  map ranks first are removed (inserted).

Registered (:func:`~captum_vit.metrics.get_metric`): ``"open_vocab_iou"``,
``"similarity_deletion"``, ``"similarity_insertion"``; the pointing game is the
registry's ``"pointing_game"`` on the pairs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._maps import min_max
from ._registry import MetricContext, MetricOutput
from ._specs import _curve, _given, _metric
from ._utils import _check_batch, _check_mask, _to_pixel_map
from .faithfulness import deletion_auc, insertion_auc

__all__ = ["ObjectPairs", "object_pairs", "threshold_iou"]


class ObjectPairs(NamedTuple):
    r"""What :func:`object_pairs` returns: one row per (image, object).

    Attributes:
        images (Tensor): ``(M, C, H, W)``, image ``index[m]`` of each pair.
        target (Tensor): ``(M,)`` int64, the object's label (its prompt's
            index in the similarity model).
        masks (Tensor): ``(M, H, W)`` bool, the object's mask.
        index (Tensor): ``(M,)`` int64, the image each pair comes from.
        slot (Tensor): ``(M,)`` int64, the object slot within its image.
    """

    images: Tensor
    target: Tensor
    masks: Tensor
    # the public field shadows tuple.index, which mypy reports as an override
    index: Tensor  # type: ignore[assignment]
    slot: Tensor


def object_pairs(images: Tensor, labels: Tensor, masks: Tensor) -> ObjectPairs:
    r"""Expand images with several objects into (image, object) pairs.

    Args:
        images (Tensor): ``(B, C, H, W)``.
        labels (Tensor): ``(B, K)`` int, each object's label (the index of the
            prompt naming it); ``-1`` marks an empty slot.
        masks (Tensor): ``(B, K, H, W)`` bool, each object's mask.

    Returns:
        ObjectPairs: one row per object, image-major, slot order.

    Examples::

        >>> from captum_vit.data import SyntheticScenes
        >>> from captum_vit.zoo.train_clip import all_prompts
        >>> b = next(iter(torch.utils.data.DataLoader(SyntheticScenes(8), 8)))
        >>> labels = torch.where(b.shapes >= 0, b.shapes * 8 + b.colours, -1)
        >>> pairs = object_pairs(b.image, labels, b.masks)
        >>> sim = cv.text_similarity(clip, all_prompts(), tokenizer)
        >>> maps = cv.LeGrad(sim).attribute(transform(pairs.images), target=pairs.target)
    """
    if images.dim() != 4 or labels.dim() != 2 or masks.dim() != 4:
        raise ValueError(
            "expected images (B, C, H, W), labels (B, K) and masks (B, K, H, W); got "
            f"{tuple(images.shape)}, {tuple(labels.shape)}, {tuple(masks.shape)}"
        )
    B, K = labels.shape
    if images.shape[0] != B or masks.shape[:2] != (B, K):
        raise ValueError(
            f"{images.shape[0]} images, labels for {B} and masks for "
            f"{tuple(masks.shape[:2])}"
        )
    index, slot = torch.nonzero(labels >= 0, as_tuple=True)
    return ObjectPairs(
        images[index],
        labels[index, slot].long(),
        masks[index, slot].bool(),
        index,
        slot,
    )


def threshold_iou(
    attributions: Tensor, masks: Tensor, threshold: float = 0.5
) -> Tensor:
    r"""IoU of the thresholded map with the object's mask (LeGrad's
    binarisation for its open-vocabulary mIoU).

    The map (upsampled to the mask size, channels summed) is min-max
    normalised per sample to :math:`\hat a \in [0, 1]` and thresholded:

    .. math::

        \hat y(p) = \mathbb{1}\big[\hat a(p) \ge \theta\big], \qquad
        \mathrm{IoU} = \frac{|\hat y \wedge y|}{|\hat y \vee y|}

    The mean over the (image, object) pairs of a dataset is its mIoU. A
    constant map predicts nothing (IoU 0). **Higher is better.**

    Args:
        attributions (Tensor): ``(B, C, H, W)``, ``(B, 1, H, W)``, ``(B, H, W)``
            or a token grid ``(B, gh, gw)``.
        masks (Tensor): ``(B, H, W)`` or ``(B, 1, H, W)`` binary masks.
        threshold (float, optional): :math:`\theta`, on the normalised map.
            Default: 0.5

    Returns:
        Tensor: ``(B,)`` float, NaN where the mask is empty.

    Examples::

        >>> a = torch.tensor([[[0.0, 1.0], [0.2, 0.9]]])
        >>> threshold_iou(a, torch.tensor([[[0, 1], [1, 1]]]))
        tensor([0.6667])
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    _check_batch(attributions, attributions.shape[0], "attributions")
    B = attributions.shape[0]
    gt = _check_mask(masks, B, None, "masks")
    amap = _to_pixel_map(attributions, tuple(gt.shape[-2:]), B).double()
    flat = amap.reshape(B, -1)
    constant = (flat.amax(1) - flat.amin(1)) <= 0
    pred = (min_max(flat) >= float(threshold)) & ~constant[:, None]
    y = gt.reshape(B, -1).to(pred.device)
    inter = (pred & y).sum(1).double()
    union = (pred | y).sum(1).double()
    iou = inter / union.clamp(min=1)
    iou[y.sum(1) == 0] = float("nan")
    return iou.float()


@_metric("open_vocab_iou", {"ov_iou": True}, "masks")
def _open_vocab_iou(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Open-vocabulary IoU

    IoU of the map min-max normalised and thresholded at 0.5 with the mask of the
    object the prompt names (LeGrad's protocol; its mean over pairs is the mIoU);
    higher is better"""
    iou = threshold_iou(ctx.attributions, _given(ctx.masks, "masks"), **options)
    return MetricOutput({"ov_iou": iou})


@_metric("similarity_deletion", {"sim_deletion_auc": False}, "forward")
def _similarity_deletion(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Similarity deletion AUC

    deletion AUC on the prompt's similarity score itself (no softmax), patches
    removed most relevant first; lower is better"""
    return _curve(
        deletion_auc,
        ctx,
        options,
        column="sim_deletion_auc",
        patch_size=ctx.patch_size,
        apply_softmax=False,
    )


@_metric("similarity_insertion", {"sim_insertion_auc": True}, "forward")
def _similarity_insertion(ctx: MetricContext, **options: Any) -> MetricOutput:
    """Similarity insertion AUC

    insertion AUC on the prompt's similarity score itself (no softmax), patches
    inserted into a blurred image most relevant first; higher is better"""
    return _curve(
        insertion_auc,
        ctx,
        options,
        column="sim_insertion_auc",
        patch_size=ctx.patch_size,
        apply_softmax=False,
    )
