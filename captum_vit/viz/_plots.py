"""Overlays of attribution maps on images, and an image x method grid."""

from __future__ import annotations

from typing import Any, Collection, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._images import Letterbox, content_region

#: The colour map of every non-negative overlay (the web visualiser draws every
#: map with it).
CMAP = "jet"
#: The colour map of signed maps (LRP, AttnLRP, ATMAN ...): diverging, white
#: at zero, red positive, blue negative.
SIGNED_CMAP = "bwr"
#: A map counts as signed when its most negative value exceeds this share of
#: its largest absolute value (rounding noise of a non-negative map does not).
SIGNED_TOLERANCE = 1e-3


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


def _reduce(attr: Tensor) -> Tensor:
    """``(C, H, W)`` -> ``(H, W)`` (channel sum), NaN and infinities as 0."""
    a = attr.detach().float().cpu()
    if a.dim() == 3:
        a = a.sum(0)
    return torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)


def is_signed(attr: Union[Tensor, Sequence[Tensor]]) -> bool:
    """Whether the maps of a method have negative values worth showing: in one
    of them (channels summed) the most negative pixel is beyond
    :data:`SIGNED_TOLERANCE` times that map's largest absolute value.

    Args:
        attr (Tensor or sequence of Tensor): a batch ``(B, C, H, W)`` or
            ``(B, H, W)``, or a sequence of maps ``(C, H, W)`` or ``(H, W)``.

    Returns:
        bool

    Examples::

        >>> is_signed(cv.LRP(model).attribute(images))
        True
        >>> is_signed(cv.AttentionRollout(model).attribute(images))
        False
    """
    for m in attr:
        a = _reduce(m)
        if float(a.min()) < -SIGNED_TOLERANCE * float(a.abs().max()):
            return True
    return False


def normalize_map(attr: Tensor, signed: bool = False) -> np.ndarray:
    """Reduce an attribution to ``(H, W)`` (channel sum) and scale it.

    Accepts ``(C, H, W)``, ``(1, H, W)`` or ``(H, W)``; NaN and infinite
    values count as 0.

    Args:
        attr (Tensor): the map.
        signed (bool, optional): divide by the largest absolute value, so
            that the map lies in ``[-1, 1]`` with 0 kept at 0, instead of
            min-max scaling it to ``[0, 1]``. Default: False

    Returns:
        numpy.ndarray: ``(H, W)`` float32 in ``[0, 1]`` (``[-1, 1]`` signed).
    """
    a = _reduce(attr)
    if signed:
        return (a / a.abs().max().clamp_min(1e-12)).numpy()
    a = a - a.min()
    return (a / a.max().clamp_min(1e-12)).numpy()


def overlay(
    ax: Any,
    image: np.ndarray,
    attr: Tensor,
    alpha: float = 0.5,
    cmap: Optional[str] = None,
    box: Optional[Letterbox] = None,
    signed: bool = False,
) -> Any:
    """Draw ``attr`` over ``image`` on a matplotlib axis.

    An unsigned map is min-max scaled and drawn with :data:`CMAP` at opacity
    ``alpha`` over the picture. A signed map is divided by its largest
    absolute value and drawn with the diverging :data:`SIGNED_CMAP` over a
    grey copy of the picture, each pixel's opacity growing with its absolute
    value (full colour from half the largest absolute value on), so that
    zero relevance leaves the picture visible and the colours never mix with
    the picture's own.

    Args:
        ax (matplotlib.axes.Axes): the axis.
        image (numpy.ndarray): ``(H, W, 3)`` in [0, 1].
        attr (Tensor): ``(C, h, w)``, ``(1, h, w)`` or ``(h, w)``; resized to
            the image (bilinear) after :func:`normalize_map`.
        alpha (float, optional): opacity of the map (the largest opacity of
            a signed map). Default: 0.5
        cmap (str, optional): matplotlib colour map. Default: None
            (:data:`CMAP`, or :data:`SIGNED_CMAP` for a signed map)
        box (Letterbox, optional): where ``image`` lies in the input that
            ``attr`` explains (:func:`letterbox`); the padding is cut off
            first. Default: None (``attr`` covers the image)
        signed (bool, optional): draw the map as signed, centred at zero
            (:func:`is_signed` tells). Default: False

    Returns:
        matplotlib.image.AxesImage: the map's layer (for a colour bar).
    """
    heat = normalize_map(content_region(attr, box), signed=signed)
    if heat.shape != image.shape[:2]:
        t = torch.from_numpy(heat)[None, None]
        heat = torch.nn.functional.interpolate(
            t, size=image.shape[:2], mode="bilinear", align_corners=False
        )[0, 0].numpy()
    if signed:
        grey = image.mean(-1)
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
        # fully coloured from half the largest |value| on, transparent at 0
        opacity = np.clip(2.0 * np.abs(heat), 0.0, 1.0) * min(1.0, 1.6 * alpha)
        layer = ax.imshow(
            heat, cmap=cmap or SIGNED_CMAP, alpha=opacity, vmin=-1, vmax=1
        )
    else:
        ax.imshow(image)
        layer = ax.imshow(heat, cmap=cmap or CMAP, alpha=alpha, vmin=0, vmax=1)
    ax.set_axis_off()
    return layer


def _signed_columns(
    attributions: Dict[str, Tensor],
    signed: Optional[Union[bool, Collection[str]]],
) -> List[str]:
    """The methods drawn as signed maps (see :func:`method_grid`)."""
    if signed is None:
        return [n for n, a in attributions.items() if is_signed(a)]
    if isinstance(signed, bool):
        return list(attributions) if signed else []
    unknown = [n for n in signed if n not in attributions]
    if unknown:
        raise ValueError(f"signed names {unknown} are not among the attributions")
    return [n for n in attributions if n in signed]


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
    signed: Optional[Union[bool, Collection[str]]] = None,
    dpi: int = 100,
) -> Any:
    """A grid: one row per image, the image then one overlay column per method.

    Every map is scaled on its own and drawn with one of two colour maps, the
    same for every method of its kind, each with its colour bar on the right:
    a non-negative map is min-max scaled to [0, 1] (0 is the map's least, 1
    its most relevant pixel) and drawn with :data:`CMAP`; a signed map (LRP,
    AttnLRP, ATMAN: negative values speak against the class) is divided by
    its largest absolute value and drawn with the diverging
    :data:`SIGNED_CMAP`, centred at zero (:func:`overlay`).

    Args:
        images (Tensor or sequence of numpy.ndarray): ``(B, C, H, W)`` model
            inputs, or the original pictures as ``(H, W, 3)`` arrays in
            [0, 1] (any sizes) to draw the maps over them.
        attributions (dict): method name -> attribution ``(B, ...)``.
        path (str, optional): where to save the PNG. Default: None
        titles (sequence of str, optional): a caption per image row, left
            of the image (say what it is: the prediction, the label, the
            explained class). Default: None
        mean, std (sequence of float, optional): input normalisation, undone
            for display. Default: None
        cell (float, optional): size of one cell in inches. Default: 2.0
        boxes (sequence of Letterbox, optional): per image, where the
            original picture lies in the model input (:func:`letterbox`), so
            that the maps are cut to it before they are drawn over the
            picture. Default: None (maps cover the images)
        colorbar (bool, optional): draw the colour bar(s). Default: True
        signed (bool or collection of str, optional): which methods are drawn
            as signed maps: ``True`` all, ``False`` none, or their names.
            Default: None (the methods with negative values,
            :func:`is_signed` over all their maps)
        dpi (int, optional): resolution of the saved PNG. Default: 100

    Returns:
        matplotlib.figure.Figure

    Examples::

        >>> fig = method_grid(images, {"rollout": rollout_maps, "lrp": lrp_maps},
        ...                   titles=["prediction: cat (0.91)"], mean=mean, std=std)
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(attributions)
    signed_names = set(_signed_columns(attributions, signed))
    B = len(images)
    cols = len(names) + 1
    kinds = sorted({n in signed_names for n in names})
    bars = kinds if colorbar else []
    bar_w = 0.85  # inches per colour bar, its labels included
    width = cell * cols + bar_w * len(bars)
    fig, axes = plt.subplots(B, cols, figsize=(width, cell * B + 0.1), squeeze=False)
    layers: Dict[bool, Any] = {}
    for i in range(B):
        img = to_display_image(images[i], mean, std)
        box = boxes[i] if boxes is not None else None
        axes[i, 0].imshow(img)
        _caption(axes[i, 0], titles[i] if titles is not None else None)
        for j, name in enumerate(names, start=1):
            kind = name in signed_names
            layers[kind] = overlay(
                axes[i, j], img, attributions[name][i], box=box, signed=kind
            )
            if i == 0:
                axes[i, j].set_title(name, fontsize=min(9.0, 7.0 * cell))
    right = 1.0 - bar_w * len(bars) / width
    fig.tight_layout(rect=(0.0, 0.0, right, 1.0))
    labels = {
        False: "relevance (each map scaled to [0, 1])",
        True: "signed relevance (each map / its max |value|)",
    }
    top = axes[0, -1].get_position().y1
    bottom = axes[-1, -1].get_position().y0
    for k, kind in enumerate(bars):
        x0 = right + (k * bar_w + 0.08) / width
        cax = fig.add_axes((x0, bottom, 0.14 / width, top - bottom))
        bar = fig.colorbar(_opaque(layers[kind]), cax=cax)
        bar.set_label(labels[kind], fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _caption(ax: Any, text: Optional[str]) -> None:
    """No frame on ``ax``; ``text`` on its left, right-aligned (a row label
    takes width, not height, so the rows stay packed)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if text:
        ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=8)


def _opaque(layer: Any) -> Any:
    """A colour-bar source with ``layer``'s colour map and limits, opaque."""
    import matplotlib.cm

    return matplotlib.cm.ScalarMappable(norm=layer.norm, cmap=layer.get_cmap())
