"""Loader of the outputs of Chefer et al.'s code kept in ``data/chefer`` (how
they were made, and the tolerances: ``data/chefer/README.md``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from tests.tolerance import rel_err  # noqa: F401 (the reference's metric)

REF = Path(__file__).resolve().parent / "data" / "chefer"


def _timm_kwargs() -> dict:
    return json.loads((REF / "config.json").read_text())["timm_kwargs"]


@cache
def _data() -> Tuple[
    Dict[str, torch.Tensor], torch.Tensor, Dict[str, np.ndarray], Dict[str, np.ndarray]
]:
    state = torch.load(REF / "tiny_vit_state.pt", weights_only=True)
    with np.load(REF / "inputs.npz") as f:
        x = torch.from_numpy(f["x"])
    with np.load(REF / "chefer_reference.npz") as f:
        ref32 = dict(f)
    with np.load(REF / "chefer_reference_f64.npz") as f:
        ref64 = dict(f)
    return state, x, ref32, ref64


def model_in(dtype: torch.dtype) -> Tuple[VisionTransformer, torch.Tensor]:
    """A fresh copy of the reference model (eval, timm's default fused
    attention) and the inputs, both in ``dtype``."""
    state, x, _, _ = _data()
    model = VisionTransformer(**_timm_kwargs())
    model.load_state_dict(state)
    return model.to(dtype).eval(), x.to(dtype)


def reference() -> Tuple[
    VisionTransformer,
    torch.Tensor,
    Dict[str, np.ndarray],
    Dict[str, np.ndarray],
    Dict[str, torch.Tensor],
]:
    """(float32 model, x, float32 reference, float64 reference, targets), the
    targets as ``{"argmax": ..., "5": ...}``."""
    _, _, ref32, ref64 = _data()
    model, x = model_in(torch.float32)
    targets = {
        "argmax": torch.from_numpy(ref32["target_argmax"]),
        "5": torch.from_numpy(ref32["target_5"]),
    }
    return model, x, ref32, ref64, targets


def load_reference() -> Tuple[
    VisionTransformer, torch.Tensor, Dict[str, np.ndarray], Dict[str, np.ndarray]
]:
    """(float32 model, x, float32 reference, float64 reference)."""
    return reference()[:4]
