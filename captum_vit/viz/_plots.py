"""Overlays of attribution maps on images, and an image x method grid."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor


def to_display_image(
    image: Tensor,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Turn a model input ``(C, H, W)`` into an ``(H, W, 3)`` array in [0, 1].

    Args:
        image (Tensor): one image in the model's input space.
        mean (sequence of float, optional): normalisation mean to undo.
            Default: None (min-max scaling instead)
        std (sequence of float, optional): normalisation std to undo.
            Default: None
    """
    img = image.detach().float().cpu()
    if mean is not None and std is not None:
        img = img * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
        img = img.clamp(0, 1)
    else:
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return img.permute(1, 2, 0).numpy()


def normalize_map(attr: Tensor) -> np.ndarray:
    """Reduce an attribution to ``(H, W)`` (channel sum) and min-max it to [0, 1].

    Accepts ``(C, H, W)``, ``(1, H, W)`` or ``(H, W)``.
    """
    a = attr.detach().float().cpu()
    if a.dim() == 3:
        a = a.sum(0)
    a = a - a.min()
    return (a / a.max().clamp_min(1e-12)).numpy()


def overlay(ax, image: np.ndarray, attr: Tensor, alpha: float = 0.5, cmap: str = "jet"):
    """Draw ``attr`` over ``image`` on a matplotlib axis."""
    heat = normalize_map(attr)
    if heat.shape != image.shape[:2]:
        t = torch.from_numpy(heat)[None, None]
        heat = torch.nn.functional.interpolate(
            t, size=image.shape[:2], mode="bilinear", align_corners=False
        )[0, 0].numpy()
    ax.imshow(image)
    ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    ax.set_axis_off()
    return ax


def method_grid(
    images: Tensor,
    attributions: Dict[str, Tensor],
    path: Optional[str] = None,
    titles: Optional[Sequence[str]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    cell: float = 2.0,
):
    """A grid: one row per image, the image then one overlay column per method.

    Args:
        images (Tensor): ``(B, C, H, W)`` model inputs.
        attributions (dict): method name -> attribution ``(B, ...)``.
        path (str, optional): where to save the PNG. Default: None
        titles (sequence of str, optional): a caption per image row.
            Default: None
        mean, std (sequence of float, optional): input normalisation, undone
            for display. Default: None
        cell (float, optional): size of one cell in inches. Default: 2.0

    Returns:
        matplotlib.figure.Figure
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(attributions)
    B = images.shape[0]
    fig, axes = plt.subplots(
        B, len(names) + 1, figsize=(cell * (len(names) + 1), cell * B), squeeze=False
    )
    for i in range(B):
        img = to_display_image(images[i], mean, std)
        axes[i, 0].imshow(img)
        axes[i, 0].set_axis_off()
        if titles is not None:
            axes[i, 0].set_title(titles[i], fontsize=8)
        for j, name in enumerate(names, start=1):
            overlay(axes[i, j], img, attributions[name][i])
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
