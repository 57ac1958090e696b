"""Copy the part of Chefer et al.'s reference outputs that the tests read.

The full reference folder (about 11 MB: every method, both targets, all debug
intermediates; see README.md) was made outside this repository by running the
authors' code. The tests read only the arrays listed below; this script copies
those arrays, and the model, inputs and config unchanged, into this folder:

    python tests/attr/data/chefer/subset.py /path/to/full/reference

A test that needs another array of the full folder: add its key here and
rerun the script on the full folder.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
COPIED = ("config.json", "tiny_vit_state.pt", "inputs.npz")

_PER_TARGET = [
    f"{m}__target_{t}"
    for m in ("transformer_attribution", "partial_lrp", "last_layer")
    for t in ("argmax", "5")
]
#: float32 run of the reference code (the key names of its README §4 and §7)
KEYS32 = [
    "target_argmax",
    "target_5",
    *_PER_TARGET,
    "lrp_relevance_rollout__target_argmax",
    "lrp_relevance_rollout__target_5",
    "full_lrp__target_argmax",
    "full_lrp_orig__target_argmax",
    "rollout__target_argmax",
    "last_layer_attn__target_argmax",
    "debug_img0_target_argmax__attn_cam",
]
#: float64 run of the same code
KEYS64 = [
    *_PER_TARGET,
    "lrp_relevance_rollout__target_argmax",
    "full_lrp__target_argmax",
    "full_lrp_orig__target_5",
    "rollout__target_argmax",
    "debug_img0_target_argmax__ta_layer_maps",
]


def subset(full: Path, out: Path = HERE) -> None:
    """Write the arrays the tests read from the ``full`` folder into ``out``."""
    for name in COPIED:
        shutil.copyfile(full / name, out / name)
    for name, keys in (
        ("chefer_reference.npz", KEYS32),
        ("chefer_reference_f64.npz", KEYS64),
    ):
        with np.load(full / name) as src:
            np.savez_compressed(out / name, **{k: src[k] for k in keys})


if __name__ == "__main__":
    subset(Path(sys.argv[1]))
