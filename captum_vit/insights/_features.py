"""Dataset and feature plumbing shaped like Captum Insights' (``Batch``,
``ImageFeature``), so that code written for ``captum.insights`` keeps working.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor


@dataclass(eq=False)  # tensors: compared by identity, as before
class Batch:
    r"""A batch of inputs to visualise, as Captum Insights' ``Batch``.

    Args:
        inputs (Tensor or tuple of one Tensor): images ``(B, C, H, W)``, before
            the feature's ``input_transforms`` (typically in ``[0, 1]``).
        labels (Tensor, optional): the correct class of each image, ``(B,)``.
            Default: None
        additional_args (Any, optional): kept for compatibility; the
            visualiser does not pass extra arguments to the model.
            Default: None

    Examples::

        >>> import torch
        >>> from captum_vit.insights import Batch
        >>> b = Batch(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    """

    inputs: Union[Tensor, Tuple[Tensor, ...]]
    labels: Optional[Tensor] = None
    additional_args: Any = None


class ImageFeature:
    r"""An image input, as Captum Insights' ``ImageFeature``.

    Args:
        name (str): the feature's name.
        baseline_transforms (list of callable): kept for compatibility (the
            ViT methods do not take baselines). Default: None
        input_transforms (list of callable): applied in order to each image
            ``(C, H, W)`` to obtain the model's input (e.g. a normalisation).
            Default: None
        visualization_transform (callable, optional): applied to the image
            before it is shown. Default: None

    Examples::

        >>> from captum_vit.insights import ImageFeature
        >>> from captum_vit.zoo import Normalize
        >>> feature = ImageFeature("Photo", input_transforms=[
        ...     Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
    """

    def __init__(
        self,
        name: str,
        baseline_transforms: Optional[List[Callable]] = None,
        input_transforms: Optional[List[Callable]] = None,
        visualization_transform: Optional[Callable] = None,
    ) -> None:
        self.name = name
        self.baseline_transforms = list(baseline_transforms or [])
        self.input_transforms = list(input_transforms or [])
        self.visualization_transform = visualization_transform


class Compose:
    """Apply callables in order (a tiny ``torchvision.transforms.Compose``)."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x


def normalisation_of(transform: Any) -> Tuple[Optional[list], Optional[list]]:
    """``(mean, std)`` of a normalising transform (or of one in a Compose)."""
    candidates = [transform] + list(getattr(transform, "transforms", []) or [])
    for t in candidates:
        mean, std = getattr(t, "mean", None), getattr(t, "std", None)
        if mean is None or std is None:
            continue
        try:
            mean = torch.as_tensor(mean, dtype=torch.float32).flatten().tolist()
            std = torch.as_tensor(std, dtype=torch.float32).flatten().tolist()
        except (TypeError, ValueError):
            continue
        return mean, std
    return None, None


def _label_of(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    return None


def _image_of(value: Any) -> Tensor:
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    if not isinstance(value, Tensor):
        raise TypeError(
            f"dataset images must be tensors (C, H, W); got {type(value).__name__}"
        )
    if value.dim() == 4 and value.shape[0] == 1:
        value = value[0]
    if value.dim() != 3:
        raise ValueError(
            f"dataset images must have shape (C, H, W); got {tuple(value.shape)}"
        )
    return value.detach().float().cpu()


def collect_samples(
    dataset: Any, max_samples: int
) -> List[Tuple[Tensor, Optional[int]]]:
    """Read up to ``max_samples`` ``(image, label)`` pairs from ``dataset``.

    ``dataset`` may be a map-style dataset (``__len__`` and ``__getitem__``)
    whose items are tuples ``(image, label, ...)`` (such as
    :class:`captum_vit.data.Sample`) or images alone, or an iterable of
    :class:`Batch` objects (Captum Insights' format), or None.
    """
    out: List[Tuple[Tensor, Optional[int]]] = []
    if dataset is None or max_samples <= 0:
        return out
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        items: Iterable = (dataset[i] for i in range(len(dataset)))
    else:
        items = dataset
    for item in items:
        if hasattr(item, "inputs"):  # a Batch
            _add_batch(out, item.inputs, getattr(item, "labels", None), max_samples)
        elif isinstance(item, Tensor):
            out.append((_image_of(item), None))
        else:
            label = _label_of(item[1]) if len(item) > 1 else None
            out.append((_image_of(item[0]), label))
        if len(out) >= max_samples:
            return out[:max_samples]
    return out


def _add_batch(
    out: List[Tuple[Tensor, Optional[int]]],
    inputs: Any,
    labels: Any,
    max_samples: int,
) -> None:
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != 1:
            raise ValueError("the visualiser takes one image input per batch")
        inputs = inputs[0]
    if inputs.dim() == 3:
        inputs = inputs[None]
    for j in range(inputs.shape[0]):
        label = None
        if labels is not None:
            labels_t = torch.as_tensor(labels)
            label = _label_of(labels_t[j] if labels_t.dim() > 0 else labels_t)
        out.append((_image_of(inputs[j]), label))
        if len(out) >= max_samples:
            return
