"""Private helpers shared by every metric of :mod:`captum_vit.metrics`.

All shape normalisation of attributions lives here, in one place:

* :func:`_to_pixel_map` turns any attribution a Captum or captum_vit method returns
  (``(B, C, H, W)`` like the input, ``(B, 1, H, W)``, ``(B, H, W)`` or a token grid
  ``(B, gh, gw)``) into a ``(B, H, W)`` pixel map: channels are summed and token grids
  are upsampled bilinearly (``align_corners=False``), as Chefer et al. upsample their
  ``14 x 14`` maps with ``F.interpolate(..., scale_factor=16, mode="bilinear")``.
* :func:`_to_token_map` turns the same inputs into a ``(B, gh, gw)`` patch grid: token
  grids are kept, pixel maps are summed over each ``patch_size x patch_size`` patch.

Both go through :mod:`captum_vit._maps`, the conversions :mod:`captum_vit.attr` uses
too. Here the patch grid must tile the image: a metric knows the patch size, not
whether the model drops or pads a border.

Errors follow :mod:`captum_vit.attr`'s style: ``TypeError`` for a wrong type,
``ValueError`` for a wrong value, the message starting with the argument's name.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .._batching import check_internal_batch_size
from .._maps import pixels_to_tokens, tokens_to_pixels

BaselineType = Union[str, float, int, Tensor]


def _check_tensor(value: Any, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_inputs(inputs: Any, name: str = "inputs") -> Tensor:
    _check_tensor(inputs, name)
    if inputs.dim() != 4:
        raise ValueError(
            f"{name} must be a batch of images (B, C, H, W); got shape "
            f"{tuple(inputs.shape)}"
        )
    return inputs


def _check_batch(attributions: Any, batch_size: int, name: str) -> None:
    _check_tensor(attributions, name)
    if attributions.dim() not in (3, 4):
        raise ValueError(
            f"{name} must have shape (B, C, H, W), (B, 1, H, W), (B, H, W) or a token "
            f"grid (B, gh, gw); got shape {tuple(attributions.shape)}"
        )
    if attributions.shape[0] != batch_size:
        raise ValueError(
            f"{name} has batch size {attributions.shape[0]} for {batch_size} inputs"
        )


def _spatial(attributions: Tensor) -> Tensor:
    """(B, C, h, w) or (B, h, w) -> (B, h, w) floating point, channels summed."""
    if attributions.dim() == 4:
        attributions = attributions.sum(dim=1)
    attributions = attributions.detach()
    return attributions if attributions.is_floating_point() else attributions.float()


def _checked_spatial(attributions: Any, batch_size: Optional[int], name: str) -> Tensor:
    """:func:`_spatial` after checking the layout and (if given) the batch size."""
    _check_tensor(attributions, name)
    _check_batch(
        attributions, attributions.shape[0] if batch_size is None else batch_size, name
    )
    return _spatial(attributions)


def _tiling_patch(size: Sequence[int], image_size: Sequence[int]) -> Optional[int]:
    """The square patch with which a ``size`` grid tiles the image, or None."""
    (h, w), (H, W) = size, image_size
    if H % h == 0 and W % w == 0 and H // h == W // w:
        return H // h
    return None


def _to_pixel_map(
    attributions: Tensor,
    image_size: Sequence[int],
    batch_size: Optional[int] = None,
    name: str = "attributions",
) -> Tensor:
    """Any attribution layout -> (B, H, W) float pixel map (see module docstring)."""
    amap = _checked_spatial(attributions, batch_size, name)
    H, W = int(image_size[0]), int(image_size[1])
    h, w = amap.shape[-2:]
    if (h, w) == (H, W):
        return amap
    patch = _tiling_patch((h, w), (H, W))
    if patch is not None:
        return tokens_to_pixels(amap, (H, W), patch)[:, 0]
    raise ValueError(
        f"{name} has spatial size {(h, w)}, which is neither the image size "
        f"{(H, W)} nor a token grid that tiles it with square patches"
    )


def _grid_size(image_size: Sequence[int], patch_size: int) -> Tuple[int, int]:
    H, W = int(image_size[0]), int(image_size[1])
    if isinstance(patch_size, bool) or not isinstance(patch_size, int):
        raise TypeError(
            f"patch_size must be a positive int, got {type(patch_size).__name__}"
        )
    if patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if H % patch_size or W % patch_size:
        raise ValueError(
            f"patch_size={patch_size} does not divide the image size {(H, W)}"
        )
    return H // patch_size, W // patch_size


def _to_token_map(
    attributions: Tensor,
    image_size: Sequence[int],
    patch_size: int,
    batch_size: Optional[int] = None,
    name: str = "attributions",
) -> Tensor:
    """Any attribution layout -> (B, gh, gw) float patch grid (see module docstring)."""
    amap = _checked_spatial(attributions, batch_size, name)
    gh, gw = _grid_size(image_size, patch_size)
    h, w = amap.shape[-2:]
    if (h, w) == (gh, gw):
        return amap
    if (h, w) == tuple(int(s) for s in image_size):
        return pixels_to_tokens(amap, (gh, gw), patch_size)
    raise ValueError(
        f"{name} has spatial size {(h, w)}; expected the image size "
        f"{tuple(image_size)} or the token grid {(gh, gw)} of patch_size={patch_size}"
    )


def _infer_patch_size(attributions: Tensor, image_size: Sequence[int]) -> int:
    """Patch size implied by a token-grid attribution, or ValueError."""
    size = tuple(attributions.shape[-2:])
    patch = None if size == tuple(image_size) else _tiling_patch(size, image_size)
    if patch is None:
        raise ValueError(
            "token-level evaluation needs patch_size (it can only be inferred from a "
            "token-grid attribution)"
        )
    return patch


def _ranks(scores: Tensor, descending: bool = True) -> Tensor:
    """Rank of every feature (0 = first to be perturbed), ties broken by index.

    ``scores`` is (B, N). A stable sort makes the order reproducible across devices.
    """
    order = torch.sort(scores, dim=1, descending=descending, stable=True).indices
    ranks = torch.empty_like(order)
    ar = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    ranks.scatter_(1, order, ar)
    return ranks


def _generator(
    seed: Optional[int], generator: Optional[torch.Generator]
) -> Optional[torch.Generator]:
    """A private generator seeded with ``seed``, or ``generator`` (not both)."""
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both")
    if seed is not None:
        return torch.Generator().manual_seed(int(seed))
    return generator


def _forward(forward_func: Callable, x: Tensor, args: tuple) -> Tensor:
    out = forward_func(x, *args)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise ValueError(
            "forward_func must return a (batch, num_classes) tensor; got "
            f"{getattr(out, 'shape', type(out))}"
        )
    return out


def _progress(
    iterable: Iterable, show: bool, desc: str, total: Optional[int] = None
) -> Iterable:
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total)


def _check_batch_size(internal_batch_size: Optional[int], default: int) -> int:
    return check_internal_batch_size(internal_batch_size, max(1, default))


def _gaussian_blur(inputs: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """Per-channel Gaussian blur with reflect-free zero padding (as Petsiuk et al.)."""
    half = (kernel_size - 1) / 2
    xs = torch.arange(kernel_size, dtype=inputs.dtype, device=inputs.device) - half
    k1 = torch.exp(-(xs**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    k2 = torch.outer(k1, k1)
    C = inputs.shape[1]
    weight = k2.expand(C, 1, kernel_size, kernel_size)
    return F.conv2d(inputs, weight, padding=kernel_size // 2, groups=C)


def _black(
    inputs: Tensor,
    mean: Optional[Sequence[float]],
    std: Optional[Sequence[float]],
) -> Tensor:
    """Pixel value 0 in the model's input space: ``(0 - mean) / std`` per channel."""
    C = inputs.shape[1]
    m = torch.zeros(C) if mean is None else torch.as_tensor(mean, dtype=torch.float)
    s = torch.ones(C) if std is None else torch.as_tensor(std, dtype=torch.float)
    m, s = m.reshape(-1), s.reshape(-1)
    if m.numel() not in (1, C) or s.numel() not in (1, C):
        raise ValueError(f"mean/std must have 1 or {C} entries (one per channel)")
    if torch.any(s == 0):
        raise ValueError("std must be non-zero")
    value = (-m / s).to(dtype=inputs.dtype, device=inputs.device)
    return value.expand(C).reshape(1, C, 1, 1).expand_as(inputs)


def _resolve_baseline(
    baseline: BaselineType,
    inputs: Tensor,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> Tensor:
    """Baseline of the same shape as ``inputs``.

    ``"black"``: pixel value 0 expressed in the model's input space, i.e.
    ``(0 - mean) / std`` per channel (0 when ``mean``/``std`` are not given: the inputs
    are then taken to be un-normalised pixels). ``"zero"``: 0 in input space. ``"mean"``:
    per-image, per-channel mean. ``"blur"``: Gaussian blur (kernel 11, sigma 5, as in
    Petsiuk et al.'s code). A number or a tensor broadcastable to ``inputs`` is used as
    is.
    """
    if isinstance(baseline, str):
        if baseline == "black":
            return _black(inputs, mean, std)
        if baseline == "zero":
            return torch.zeros_like(inputs)
        if baseline == "mean":
            return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs)
        if baseline == "blur":
            return _gaussian_blur(inputs)
        raise ValueError(
            f"unknown baseline {baseline!r}; expected 'black', 'zero', 'mean', 'blur', "
            "a number or a tensor"
        )
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(inputs, float(baseline))
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(dtype=inputs.dtype, device=inputs.device).expand_as(
                inputs
            )
        except RuntimeError as e:
            raise ValueError(
                f"baseline of shape {tuple(baseline.shape)} cannot be broadcast to "
                f"the inputs' shape {tuple(inputs.shape)}"
            ) from e
    raise TypeError(
        "baseline must be a string, a number or a tensor, got "
        f"{type(baseline).__name__}"
    )


def _check_mask(
    masks: Any, batch_size: int, image_size: Optional[Sequence[int]], name: str
) -> Tensor:
    """(B, H, W) or (B, 1, H, W) -> (B, H, W) bool."""
    _check_tensor(masks, name)
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[0] != batch_size:
        raise ValueError(
            f"{name} must have shape (B, H, W) or (B, 1, H, W) with B={batch_size}; "
            f"got {tuple(masks.shape)}"
        )
    if image_size is not None and tuple(masks.shape[-2:]) != tuple(image_size):
        raise ValueError(
            f"{name} has spatial size {tuple(masks.shape[-2:])}, expected "
            f"{tuple(image_size)}"
        )
    return masks.bool()


def _boxes_to_masks(boxes: Tensor, image_size: Sequence[int]) -> Tensor:
    """(B, 4) boxes (x_min, y_min, x_max, y_max), max exclusive -> (B, H, W) bool."""
    H, W = image_size
    ys = torch.arange(H, device=boxes.device).view(1, H, 1)
    xs = torch.arange(W, device=boxes.device).view(1, 1, W)
    b = boxes.to(torch.float)
    return (
        (xs >= b[:, 0, None, None])
        & (xs < b[:, 2, None, None])
        & (ys >= b[:, 1, None, None])
        & (ys < b[:, 3, None, None])
    )


def _check_boxes(boxes: Any, batch_size: int) -> Tensor:
    _check_tensor(boxes, "boxes")
    if boxes.dim() != 2 or boxes.shape != (batch_size, 4):
        raise ValueError(
            f"boxes must be a (B, 4) tensor of (x_min, y_min, x_max, y_max) with "
            f"B={batch_size}; got shape {tuple(boxes.shape)}"
        )
    return boxes


def _pearson(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """Pearson correlation along ``dim`` (NaN where a variance is zero)."""
    a = a.double() - a.double().mean(dim=dim, keepdim=True)
    b = b.double() - b.double().mean(dim=dim, keepdim=True)
    num = (a * b).sum(dim=dim)
    den = torch.sqrt((a * a).sum(dim=dim) * (b * b).sum(dim=dim))
    return (num / den).float()
