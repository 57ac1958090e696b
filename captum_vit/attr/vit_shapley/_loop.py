"""The one training loop of ViT Shapley, shared by the surrogate and the
explainer: batches from any dataloader, Adam, a tqdm bar, seeded by the
caller's objective."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from torch import Tensor, nn


def check_training_args(epochs: int, lr: float, max_steps: Optional[int]) -> None:
    """Raise ``ValueError`` for arguments :func:`fit` cannot train with."""
    if not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if max_steps is not None and (
        not isinstance(max_steps, numbers.Integral) or max_steps < 1
    ):
        raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")


def training_device(model: nn.Module, device: Any = None) -> torch.device:
    """``device``, or where ``model``'s parameters are (CPU if it has none)."""
    if device is not None:
        return torch.device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def images_of(batch: Any) -> Tensor:
    """The image tensor of a dataloader batch (tensor, tuple/list, dict)."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, dict):
        for key in ("image", "images", "pixel_values", "x"):
            if key in batch:
                return batch[key]
        raise ValueError(
            f"cannot find the images in a dict batch with keys {sorted(batch)}; "
            "use one of 'image', 'images', 'pixel_values', 'x'"
        )
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise ValueError(
        "a dataloader batch must be an image tensor, a tuple/list whose first "
        f"element is the image tensor, or a dict; got {type(batch).__name__}"
    )


def _batches(
    dataloader: Iterable[Any], epochs: int, max_steps: Optional[int]
) -> Iterator[Tensor]:
    step = 0
    for _ in range(epochs):
        for batch in dataloader:
            if max_steps is not None and step >= max_steps:
                return
            yield images_of(batch)
            step += 1


def _num_steps(
    dataloader: Iterable[Any], epochs: int, max_steps: Optional[int]
) -> Optional[int]:
    try:
        n = len(dataloader) * epochs  # type: ignore[arg-type]
    except TypeError:
        return max_steps
    return n if max_steps is None else min(n, max_steps)


def fit(
    module: nn.Module,
    loss_fn: Callable[[Tensor], Tensor],
    dataloader: Iterable[Any],
    *,
    device: torch.device,
    epochs: int,
    lr: float,
    weight_decay: float,
    max_steps: Optional[int],
    show_progress: bool,
    desc: str,
    postfix: str,
) -> None:
    """Train ``module`` in place: one Adam step on ``loss_fn(images)`` a batch.

    Gradients are on inside the loop (also when the caller is under
    ``torch.no_grad()``), and ``module``'s gradients are cleared afterwards.

    Args:
        module (torch.nn.Module): the model to train; its parameters that
            require gradients get them.
        loss_fn (callable): the objective of one batch, ``images`` on
            ``device`` -> scalar loss.
        dataloader (iterable): image batches (see :func:`images_of`).
        device (torch.device): where the batches are moved.
        epochs (int): passes over ``dataloader``.
        lr (float): Adam learning rate.
        weight_decay (float): Adam weight decay.
        max_steps (int, optional): stop after this many batches.
        show_progress (bool): tqdm progress bar.
        desc (str): the bar's label.
        postfix (str): format of the loss on the bar, e.g. ``"kl={:.4f}"``.
    """
    from tqdm.auto import tqdm

    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    batches = _batches(dataloader, epochs, max_steps)
    total = _num_steps(dataloader, epochs, max_steps)
    with tqdm(batches, total=total, desc=desc, disable=not show_progress) as bar:
        with torch.enable_grad():
            for images in bar:
                loss = loss_fn(images.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if show_progress:
                    bar.set_postfix_str(postfix.format(loss.item()))
    for p in module.parameters():
        p.grad = None
