"""The one target normaliser of :mod:`captum_vit.attr` and :mod:`captum_vit.metrics`.

Captum's target semantics (``captum.attr.IntegratedGradients.attribute``'s
``target``), for a model whose output is ``(B, classes)``:

* ``None``: no target (the methods and metrics then use the predicted class);
* an int (numpy integer scalars too): that class for every sample;
* a tuple: one index into the output (after the batch axis) for every sample,
  so a ``(B, classes)`` output takes a 1-tuple ``(k,)``;
* a tensor or a numpy array of integers: one element (every sample) or a
  ``(B,)`` vector (one class per sample);
* a list: one int (or 1-tuple) per sample; a list of one entry is used for
  every sample.

Booleans are rejected (``True`` is an ``int`` in Python, but never a class),
so are float, complex and boolean tensors or arrays. A wrong type raises
``TypeError``; a wrong value (length, shape, range) ``ValueError``.
"""

from __future__ import annotations

import numbers
from typing import Any, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch
from torch import Tensor

__all__ = ["TargetType", "format_target", "check_target_range"]

TargetType = Union[
    None,
    int,
    Tuple[int, ...],
    Tensor,
    np.ndarray,
    Sequence[Union[int, Tuple[int, ...]]],
]

_ACCEPTED = (
    "None, an int, a 1-tuple (k,), an integer tensor or numpy array, or a list of ints"
)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(
        value, (bool, np.bool_)
    )


def _one_index(index: Tuple[Any, ...]) -> int:
    """The class a tuple target names in a ``(B, classes)`` output."""
    if len(index) != 1:
        raise ValueError(
            "a tuple target indexes the output of every sample, and a (B, classes) "
            f"output takes a 1-tuple (k,); got {index!r} (give one class per sample "
            "as a list or a tensor)"
        )
    if not _is_int(index[0]):
        raise TypeError(
            f"a tuple target must hold an int, got {type(index[0]).__name__}"
        )
    return int(index[0])


def _from_tensor(target: Tensor) -> Tensor:
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise TypeError(f"a target tensor must hold integers, got {target.dtype}")
    if target.numel() != 1 and target.dim() != 1:
        raise ValueError(
            "a target tensor must have one element or shape (B,); got shape "
            f"{tuple(target.shape)}"
        )
    return target.detach().reshape(-1).long()


def _from_list(target: List[Any]) -> Tensor:
    values = []
    for v in target:
        if isinstance(v, tuple):
            values.append(_one_index(v))
        elif _is_int(v):
            values.append(int(v))
        else:
            raise TypeError(
                "a target list must hold one int (or 1-tuple) per sample, got "
                f"{type(v).__name__}"
            )
    return torch.tensor(values, dtype=torch.long)


def format_target(
    target: TargetType,
    batch_size: int,
    num_classes: Optional[int] = None,
    device: Union[str, torch.device, None] = None,
    outputs: str = "classes",
) -> Optional[Tensor]:
    """Normalise ``target`` to a LongTensor ``(B,)``, or None.

    Args:
        target (TargetType): see the module docstring.
        batch_size (int): the number of samples ``B``.
        num_classes (int, optional): when given, every class must lie in
            ``[0, num_classes)``. Default: None
        device (str or torch.device, optional): device of the result; None keeps
            a tensor target's device (CPU for the other forms). Default: None
        outputs (str, optional): what the outputs are, in the out-of-range
            message (``"prompts"`` for a similarity model). Default:
            ``"classes"``

    Returns:
        Tensor or None: one class per sample, or None for ``target=None``.

    Raises:
        TypeError: a bool, a float, a string or another unsupported type.
        ValueError: a tuple longer than one, a tensor of another shape, a list
            or tensor whose length is neither 1 nor ``B``, a class out of range.
    """
    if target is None:
        return None
    if isinstance(target, (bool, np.bool_)):
        raise TypeError(f"target must be {_ACCEPTED}; got the bool {target!r}")
    if _is_int(target):
        t = torch.tensor([int(cast(int, target))], dtype=torch.long)
    elif isinstance(target, tuple):
        t = torch.tensor([_one_index(target)], dtype=torch.long)
    elif isinstance(target, Tensor):
        t = _from_tensor(target)
    elif isinstance(target, np.ndarray):
        if not np.issubdtype(target.dtype, np.integer):
            raise TypeError(f"a target array must hold integers, got {target.dtype}")
        t = _from_tensor(torch.from_numpy(np.ascontiguousarray(target)))
    elif isinstance(target, list):
        t = _from_list(target)
    else:
        raise TypeError(f"target must be {_ACCEPTED}; got {type(target).__name__}")
    if t.numel() == 1:
        t = t.expand(batch_size).clone()
    if t.numel() != batch_size:
        raise ValueError(f"target has {t.numel()} entries for a batch of {batch_size}")
    if num_classes is not None:
        check_target_range(t, num_classes, outputs)
    return t if device is None else t.to(device)


def check_target_range(
    target: Tensor, num_classes: int, outputs: str = "classes"
) -> None:
    """Raise ``ValueError`` unless every class of ``target`` is in
    ``[0, num_classes)`` (``outputs`` names them in the message)."""
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"target {target.tolist()} out of range for {num_classes} {outputs}"
        )
