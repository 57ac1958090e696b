"""Matplotlib overlays and method grids (matplotlib is imported lazily), and the
image loading and letterbox shared by the command line and the web visualiser."""

from ._images import (
    Letterbox,
    content_region,
    image_to_array,
    letterbox,
    load_image,
    open_reduced,
)
from ._plots import (
    CMAP,
    SIGNED_CMAP,
    is_signed,
    method_grid,
    normalize_map,
    overlay,
    to_display_image,
)

__all__ = [
    "CMAP",
    "SIGNED_CMAP",
    "Letterbox",
    "content_region",
    "image_to_array",
    "is_signed",
    "letterbox",
    "load_image",
    "method_grid",
    "normalize_map",
    "open_reduced",
    "overlay",
    "to_display_image",
]
