"""Every place where ViT Shapley reads or changes a model's training state.

Training never changes the user's classifier: it trains deep copies
(:func:`copy_for_training`). The one change to a model the caller holds is
:func:`frozen`, which holds the surrogate in eval mode without gradients while
the explainer trains, and restores its modes and flags on exit, also on error.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

from torch import nn


def copy_for_training(model: nn.Module, device: Any, train: bool) -> nn.Module:
    """A deep copy of ``model`` on ``device``; ``model`` is only read.

    Args:
        model (torch.nn.Module): the model to copy.
        device (torch.device or str, optional): where the copy lives; None
            leaves it where ``model`` is.
        train (bool): True: train mode with every parameter trainable (a
            model to train); False: eval mode with no parameter trainable
            (a frozen teacher).

    Returns:
        torch.nn.Module: the copy.
    """
    clone = copy.deepcopy(model).to(device).train(train)
    clone.requires_grad_(train)
    return clone


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode without gradients inside the context.

    Every submodule's mode and every parameter's ``requires_grad`` are
    restored on exit, whether the block returns or raises.

    Args:
        module (torch.nn.Module): the module to freeze.

    Yields:
        torch.nn.Module: ``module``.
    """
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        module.eval()
        module.requires_grad_(False)
        yield module
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)
