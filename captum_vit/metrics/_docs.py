"""``Args:`` entries that several metrics share, written once.

A metric's docstring is written in place; where it takes arguments another
metric documents with the same words, a line holding only ``{piece}`` stands
for them and :func:`shared_args` fills it in when the function is defined
(re-indented to that line), so ``help()`` and the documentation show every
argument.
"""

from __future__ import annotations

import re
import textwrap
from typing import Callable, Dict, TypeVar

F = TypeVar("F", bound=Callable[..., object])

_PLACEHOLDER = re.compile(r"^( *)\{(\w+)\}$", flags=re.MULTILINE)

#: The entries of the ``Args:`` sections, by placeholder name.
PIECES: Dict[str, str] = {
    # the model and what is explained, short form
    "model_args": """
        forward_func (Callable): model mapping ``(N, C, H, W)`` to
            ``(N, num_classes)``.
        inputs (Tensor): ``(B, C, H, W)`` images in the model's input space.
        attributions (Tensor): any Captum layout or a token grid; channels summed.
    """,
    "target": """
        target (int, tuple, Tensor, list or array, optional): explained class
            (Captum's target forms); ``None`` = predicted. Default: None
    """,
    # the same, long form (the curve metrics, which come first in the docs)
    "curve_model_args": """
        forward_func (Callable): The model (or any function) mapping a batch of inputs
            of shape ``(N, C, H, W)`` (plus ``additional_forward_args``) to
            ``(N, num_classes)`` scores.
        inputs (Tensor): ``(B, C, H, W)`` images, in the space the model takes them
            (normalised, if the model expects normalised inputs).
        attributions (Tensor): attributions from any Captum or captum_vit method:
            ``(B, C, H, W)``, ``(B, 1, H, W)``, ``(B, H, W)`` or a token grid
            ``(B, gh, gw)`` (upsampled bilinearly). Channels are summed.
        target (int, tuple, Tensor, list or array, optional): class explained for
            each image, in Captum's target forms. ``None`` uses the class the model
            predicts on the unperturbed input. Default: None
    """,
    # deletion / insertion: the baseline (each states its own default after it)
    "curve_baseline": """
        baseline (str, float or Tensor, optional): value the perturbed pixels take:
            ``"zero"`` (0 in input space), ``"blur"`` (Gaussian blur, kernel 11,
            sigma 5, as Petsiuk et al.'s code), ``"mean"`` (per-image channel mean),
            ``"black"`` (0 in input space too: use a number or a tensor for black in a
            normalised space), a number, or a tensor broadcastable to ``inputs``.
    """,
    # deletion / insertion: the steps and the score
    "curve_steps": """
        n_steps (int, optional): number of perturbation steps; after step ``i`` the
            first ``floor(i * N / n_steps)`` of the ``N`` features are perturbed.
            ``None`` means ``min(100, N)``. Ignored when ``step_size`` is given.
            Default: None
        step_size (int, optional): features perturbed per step (Petsiuk et al. use
            224 pixels on 224 x 224 images; Quantus calls it ``features_in_step``);
            the last step may be shorter. Default: None
        patch_size (int, optional): ``None`` perturbs pixels; an int perturbs whole
            ``patch_size x patch_size`` patches (token level), ranked by the summed
            attribution of each patch (or the token grid itself). Default: None
        apply_softmax (bool, optional): score is the softmax probability of the
            target class (Petsiuk et al.); ``False`` uses the raw output.
            Default: True
    """,
    # the draws of the patch perturbation functions for captum.metrics
    "perturb_seed": """
        seed (int, optional): seed of a private generator: repeated runs draw the
            same sequence of perturbations. Default: None
        generator (torch.Generator, optional): generator to draw from (instead of
            ``seed``). Default: None
    """,
    # how the perturbed copies run, last of every model-running metric
    "run_args": """
        additional_forward_args (Any, optional): extra arguments of
            ``forward_func``; tensors whose first dimension is ``B`` are indexed per
            perturbed copy. Default: None
        internal_batch_size (int, optional): perturbed copies per forward pass;
            ``None`` means ``B``. Default: None
        show_progress (bool, optional): tqdm progress bar over the chunks.
            Default: False
    """,
}


def shared_args(fn: F) -> F:
    """Fill each line of ``fn``'s docstring that holds only ``{name}`` with the
    entries ``PIECES[name]``, indented as that line."""

    def fill(match: re.Match[str]) -> str:
        piece = textwrap.dedent(PIECES[match.group(2)]).strip("\n")
        return textwrap.indent(piece, match.group(1))

    if fn.__doc__:  # None under python -OO
        fn.__doc__ = _PLACEHOLDER.sub(fill, fn.__doc__)
    return fn
