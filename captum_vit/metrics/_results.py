"""Result containers shared by the metrics (private module; re-exported publicly)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class CurveResult(NamedTuple):
    r"""Result of a perturbation-curve metric (deletion, insertion, perturbation test).

    Attributes:
        auc (Tensor): ``(B,)`` area under each image's curve, by the trapezoid rule
            over :attr:`fractions`.
        curve (Tensor): ``(B, S + 1)`` the score after perturbing each fraction of the
            features; column 0 is the unperturbed point (0%).
        fractions (Tensor): ``(S + 1,)`` the x-axis: fraction of the features (pixels
            or patches) perturbed at each point, starting at 0.

    The dataset-level value is ``result.auc.mean()`` (equal to the AUC of the mean
    curve, since the trapezoid rule is linear).
    """

    auc: Tensor
    curve: Tensor
    fractions: Tensor
