"""The one training loop of ViT Shapley, shared by the surrogate and the
explainer: image batches from any dataloader, Adam, a tqdm bar; the caller
brings the objective."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Schedule:
    """How :func:`fit` trains: passes, Adam's settings, an early stop, a bar.

    Args:
        epochs (int): passes over the dataloader, >= 1.
        lr (float): Adam learning rate, > 0.
        weight_decay (float): Adam weight decay.
        max_steps (int, optional): stop after this many batches (None: no
            limit).
        show_progress (bool): tqdm progress bar.
    """

    epochs: int
    lr: float
    weight_decay: float
    max_steps: Optional[int]
    show_progress: bool

    def __post_init__(self) -> None:
        epochs, max_steps = self.epochs, self.max_steps
        if not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if max_steps is not None and (
            not isinstance(max_steps, numbers.Integral) or max_steps < 1
        ):
            raise ValueError(
                f"max_steps must be a positive int or None, got {max_steps!r}"
            )


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
    schedule: Schedule,
    *,
    device: torch.device,
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
        schedule (Schedule): epochs, Adam's settings, early stop, bar.
        device (torch.device): where the batches are moved.
        desc (str): the bar's label.
        postfix (str): format of the loss on the bar, e.g. ``"kl={:.4f}"``.
    """
    from tqdm.auto import tqdm

    epochs, max_steps = schedule.epochs, schedule.max_steps
    opt = torch.optim.Adam(
        module.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay
    )
    batches = _batches(dataloader, epochs, max_steps)
    total = _num_steps(dataloader, epochs, max_steps)
    show = schedule.show_progress
    with tqdm(batches, total=total, desc=desc, disable=not show) as bar:
        with torch.enable_grad():
            for images in bar:
                loss = loss_fn(images.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if show:
                    bar.set_postfix_str(postfix.format(loss.item()))
    for p in module.parameters():
        p.grad = None
