"""Overlays of attribution maps on images, and an image x method grid."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._images import Letterbox, content_region

#: The colour map of every overlay (the web visualiser draws the same one).
CMAP = "jet"


def to_display_image(
    image: Union[Tensor, np.ndarray],
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Turn a model input ``(C, H, W)`` into an ``(H, W, 3)`` array in [0, 1].

    Args:
        image (Tensor or numpy.ndarray): one image in the model's input
            space, or an ``(H, W, 3)`` array in [0, 1] (returned as it is,
            e.g. an original picture from :func:`load_image`).
        mean (sequence of float, optional): normalisation mean to undo.
            Default: None (min-max scaling instead)
        std (sequence of float, optional): normalisation std to undo.
            Default: None
    """
    if isinstance(image, np.ndarray):
        return image
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

    Accepts ``(C, H, W)``, ``(1, H, W)`` or ``(H, W)``; NaN and infinite
    values count as 0.
    """
    a = attr.detach().float().cpu()
    if a.dim() == 3:
        a = a.sum(0)
    a = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    a = a - a.min()
    return (a / a.max().clamp_min(1e-12)).numpy()


def overlay(
    ax: Any,
    image: np.ndarray,
    attr: Tensor,
    alpha: float = 0.5,
    cmap: str = CMAP,
    box: Optional[Letterbox] = None,
) -> Any:
    """Draw ``attr`` over ``image`` on a matplotlib axis.

    Args:
        ax (matplotlib.axes.Axes): the axis.
        image (numpy.ndarray): ``(H, W, 3)`` in [0, 1].
        attr (Tensor): ``(C, h, w)``, ``(1, h, w)`` or ``(h, w)``; resized to
            the image (bilinear) after :func:`normalize_map`.
        alpha (float, optional): opacity of the map. Default: 0.5
        cmap (str, optional): matplotlib colour map. Default: ``"jet"``
        box (Letterbox, optional): where ``image`` lies in the input that
            ``attr`` explains (:func:`letterbox`); the padding is cut off
            first. Default: None (``attr`` covers the image)

    Returns:
        matplotlib.image.AxesImage: the map's layer (for a colour bar).
    """
    heat = normalize_map(content_region(attr, box))
    if heat.shape != image.shape[:2]:
        t = torch.from_numpy(heat)[None, None]
        heat = torch.nn.functional.interpolate(
            t, size=image.shape[:2], mode="bilinear", align_corners=False
        )[0, 0].numpy()
    ax.imshow(image)
    layer = ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    ax.set_axis_off()
    return layer


def method_grid(
    images: Union[Tensor, Sequence[np.ndarray]],
    attributions: Dict[str, Tensor],
    path: Optional[str] = None,
    titles: Optional[Sequence[str]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    cell: float = 2.0,
    boxes: Optional[Sequence[Optional[Letterbox]]] = None,
    colorbar: bool = True,
) -> Any:
    """A grid: one row per image, the image then one overlay column per method.

    Every map is min-max scaled on its own (:func:`normalize_map`) and drawn
    with the same colour map, so the colour bar (on the right) reads the same
    for every cell: 0 is the map's least, 1 its most relevant pixel.

    Args:
        images (Tensor or sequence of numpy.ndarray): ``(B, C, H, W)`` model
            inputs, or the original pictures as ``(H, W, 3)`` arrays in
            [0, 1] (any sizes) to draw the maps over them.
        attributions (dict): method name -> attribution ``(B, ...)``.
        path (str, optional): where to save the PNG. Default: None
        titles (sequence of str, optional): a caption per image row (say what
            it is: the prediction, the label, the explained class).
            Default: None
        mean, std (sequence of float, optional): input normalisation, undone
            for display. Default: None
        cell (float, optional): size of one cell in inches. Default: 2.0
        boxes (sequence of Letterbox, optional): per image, where the
            original picture lies in the model input (:func:`letterbox`), so
            that the maps are cut to it before they are drawn over the
            picture. Default: None (maps cover the images)
        colorbar (bool, optional): draw the colour bar. Default: True

    Returns:
        matplotlib.figure.Figure

    Examples::

        >>> fig = method_grid(images, {"rollout": rollout_maps},
        ...                   titles=["prediction: cat (0.91)"], mean=mean, std=std)
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(attributions)
    B = len(images)
    cols = len(names) + 1
    fig, axes = plt.subplots(
        B,
        cols,
        figsize=(cell * cols + (0.6 if colorbar else 0.0), cell * B),
        squeeze=False,
    )
    layer = None
    for i in range(B):
        img = to_display_image(images[i], mean, std)
        box = boxes[i] if boxes is not None else None
        axes[i, 0].imshow(img)
        axes[i, 0].set_axis_off()
        if titles is not None:
            axes[i, 0].set_title(titles[i], fontsize=8)
        for j, name in enumerate(names, start=1):
            layer = overlay(axes[i, j], img, attributions[name][i], box=box)
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
    fig.tight_layout()
    if colorbar and layer is not None:
        bar = fig.colorbar(layer, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
        bar.set_label("relevance (each map scaled to [0, 1])", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
