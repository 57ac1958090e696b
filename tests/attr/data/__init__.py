"""Outputs of other implementations of the methods, one folder per method,
each with the script that made them (``make_reference.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from tests.models import CLASSES, DEPTH, DIM, HEADS, IMG, PATCH

DATA = Path(__file__).resolve().parent


def load(method: str):
    """The arrays of ``<method>/reference.npz``."""
    return np.load(DATA / method / "reference.npz")


def tiny_vit(data, prefix: str = "state/", **kwargs) -> VisionTransformer:
    """The tiny timm ViT of ``tests/models.py`` with the weights stored in
    ``data`` under ``prefix`` (so the tests do not depend on timm's init)."""
    model = VisionTransformer(
        img_size=IMG,
        patch_size=PATCH,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        num_classes=CLASSES,
        qkv_bias=True,
        **kwargs,
    ).eval()
    state = {
        k[len(prefix) :]: torch.from_numpy(data[k])
        for k in data.files
        if k.startswith(prefix)
    }
    model.load_state_dict(state, strict=True)
    return model
