"""The one home of ``internal_batch_size`` for :mod:`captum_vit.attr` and
:mod:`captum_vit.metrics`.

Captum's meaning (``captum.attr.IntegratedGradients.attribute``): at most
``internal_batch_size`` rows enter one forward pass; a larger batch is
evaluated in chunks, and the result does not depend on the chunking.
``None`` evaluates everything at once (or the caller's default).

Extra forward arguments follow Captum's rule for chunking: a tensor whose
first dimension is the batch is split with the inputs; anything else (other
tensors, non-tensors) is passed unchanged to every chunk.
"""

from __future__ import annotations

import numbers
from typing import Any, List, Optional, Union, overload

import numpy as np
from torch import Tensor

__all__ = ["check_internal_batch_size", "chunks", "select_rows"]


@overload
def check_internal_batch_size(internal_batch_size: Any, default: int) -> int: ...


@overload
def check_internal_batch_size(
    internal_batch_size: Any, default: None = None
) -> Optional[int]: ...


def check_internal_batch_size(
    internal_batch_size: Any, default: Optional[int] = None
) -> Optional[int]:
    """Validate ``internal_batch_size``: a positive int, or None.

    Args:
        internal_batch_size (int or None): the value to check.
        default (int, optional): what None stands for. Default: None

    Returns:
        int or None: the value as an int, or ``default`` for None.

    Raises:
        TypeError: not an integer (a bool, a float, a string ...).
        ValueError: an integer below 1.
    """
    if internal_batch_size is None:
        return default
    if isinstance(internal_batch_size, (bool, np.bool_)) or not isinstance(
        internal_batch_size, numbers.Integral
    ):
        raise TypeError(
            "internal_batch_size must be a positive int or None, got "
            f"{internal_batch_size!r} ({type(internal_batch_size).__name__})"
        )
    if internal_batch_size < 1:
        raise ValueError(
            "internal_batch_size must be a positive int or None, got "
            f"{internal_batch_size!r}"
        )
    return int(internal_batch_size)


def chunks(total: int, size: Optional[int]) -> List[slice]:
    """The consecutive slices of at most ``size`` rows that cover ``total``
    rows, in order; one slice of all rows for None.

    Args:
        total (int): the number of rows.
        size (int or None): the most rows per slice (a checked
            ``internal_batch_size``).

    Returns:
        list of slice: ``[slice(0, size), slice(size, 2 * size), ...]``, the
        last one ending at ``total``.
    """
    step = total if size is None else size
    return [slice(s, min(s + step, total)) for s in range(0, total, max(step, 1))]


def select_rows(
    additional_forward_args: Any, rows: Union[Tensor, slice], batch_size: int
) -> tuple:
    """The extra forward arguments of the samples ``rows`` of a batch of
    ``batch_size``: tensors whose first dimension is the batch are indexed,
    everything else is kept as is.

    Args:
        additional_forward_args (Any): None, one argument or a tuple of them.
        rows (Tensor or slice): the samples to keep (an index tensor or a
            slice of the batch).
        batch_size (int): the batch size the arguments were given for.

    Returns:
        tuple: the arguments, ``()`` for None.
    """
    if additional_forward_args is None:
        return ()
    args = (
        additional_forward_args
        if isinstance(additional_forward_args, tuple)
        else (additional_forward_args,)
    )
    return tuple(
        a[rows]
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == batch_size
        else a
        for a in args
    )
