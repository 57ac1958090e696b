"""Loader of ../shared/reference (outputs of Chefer et al.'s code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

REF = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"


def load_reference():
    """Return (timm model, inputs, float32 reference, float64 reference)."""
    if not (REF / "chefer_reference.npz").exists():
        pytest.skip(f"reference data not found at {REF} (outside the workplace)")
    from timm.models.vision_transformer import VisionTransformer

    cfg = json.loads((REF / "config.json").read_text())
    model = VisionTransformer(**cfg["timm_kwargs"]).eval()
    state = torch.load(REF / "tiny_vit_state.pt", weights_only=True)
    model.load_state_dict(state)
    x = torch.from_numpy(np.load(REF / "inputs.npz")["x"])
    return (
        model,
        x,
        np.load(REF / "chefer_reference.npz"),
        np.load(REF / "chefer_reference_f64.npz"),
    )


def rel_err(ours, expected):
    """Per-image max|ours - expected| / max|expected| (the reference's metric)."""
    ours = np.asarray(ours, dtype=np.float64).reshape(len(expected), -1)
    expected = np.asarray(expected, dtype=np.float64).reshape(len(expected), -1)
    return np.abs(ours - expected).max(1) / np.abs(expected).max(1)
