"""Matplotlib overlays and method grids (matplotlib is imported lazily)."""

from ._plots import method_grid, normalize_map, overlay, to_display_image

__all__ = ["method_grid", "normalize_map", "overlay", "to_display_image"]
