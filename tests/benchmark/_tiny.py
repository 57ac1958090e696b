"""A tiny model written as a checkpoint file in the zoo's format
(``name.safetensors`` + ``name.json``), so that the benchmark's tests run in
seconds and do not depend on the embedded weights."""

from __future__ import annotations

import json
import os

from safetensors.torch import save_file

from captum_vit.zoo._build import build_vit
from tests.models import sharpen_

TINY_CONFIG = {
    "img_size": 32,
    "patch_size": 8,
    "in_chans": 3,
    "num_classes": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "qkv_bias": True,
    "class_token": True,
    "global_pool": "token",
}


def write_tiny_checkpoint(folder, seed: int = 0) -> str:
    """Write ``tiny.safetensors`` and ``tiny.json`` into ``folder``; return the
    ``.safetensors`` path."""
    import torch

    torch.manual_seed(seed)
    model = sharpen_(build_vit(TINY_CONFIG), seed)
    path = os.path.join(str(folder), "tiny.safetensors")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, path)
    meta = {
        "config": TINY_CONFIG,
        "classes": [f"c{i}" for i in range(8)],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }
    with open(os.path.join(str(folder), "tiny.json"), "w") as f:
        json.dump(meta, f)
    return path
