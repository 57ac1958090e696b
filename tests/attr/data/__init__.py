"""Outputs of other implementations of the methods, one folder per method,
each with the script that made them (``make_reference.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from tests.models import timm_vit

DATA = Path(__file__).resolve().parent


def load(method: str) -> Mapping[str, np.ndarray]:
    """The arrays of ``<method>/reference.npz``."""
    return np.load(DATA / method / "reference.npz")


def tiny_vit(
    data: Mapping[str, np.ndarray], prefix: str = "state/", **kwargs: Any
) -> VisionTransformer:
    """The tiny timm ViT of ``tests/models.py`` (``kwargs`` as there) with the
    weights stored in ``data`` under ``prefix``, so that the tests do not
    depend on timm's initialisation."""
    model = timm_vit(**kwargs)
    state = {
        k[len(prefix) :]: torch.from_numpy(data[k])
        for k in data
        if k.startswith(prefix)
    }
    model.load_state_dict(state, strict=True)
    return model
