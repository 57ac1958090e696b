"""The file format of :meth:`ViTShapley.save` and :meth:`ViTShapley.load`."""

from __future__ import annotations

from typing import Any, Callable, Tuple

import torch
from torch import nn

from ._explainer import ShapleyExplainer
from ._surrogate import ShapleySurrogate

#: the tag of the current format, checked on load
FORMAT = "captum_vit.ViTShapley/1"


def save_parts(
    path: str, explainer: ShapleyExplainer, surrogate: ShapleySurrogate, link: str
) -> None:
    """Write both trained parts (state dicts and head config) with torch.save."""
    torch.save(
        {
            "format": FORMAT,
            "link": link,
            "explainer_config": dict(explainer.config),
            "explainer": explainer.state_dict(),
            "surrogate": surrogate.state_dict(),
        },
        path,
    )


def load_parts(
    path: str, model_factory: Callable[[], nn.Module], map_location: Any = "cpu"
) -> Tuple[ShapleyExplainer, ShapleySurrogate, str]:
    """Read a file of :func:`save_parts`: ``(explainer, surrogate, link)``.

    Both parts are rebuilt on fresh models from ``model_factory`` and
    returned in eval mode.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a file written by ViTShapley.save")
    surrogate = ShapleySurrogate(model_factory())
    surrogate.load_state_dict(state["surrogate"])
    explainer = ShapleyExplainer(model_factory(), **state["explainer_config"])
    explainer.load_state_dict(state["explainer"])
    return explainer.eval(), surrogate.eval(), state["link"]
