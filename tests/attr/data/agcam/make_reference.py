"""Produce ``reference.npz``: the AGCAM authors' code on a tiny ViT.

Not part of the test run. The authors' code (github.com/LeemSaebom/
Attention-Guided-CAM-Visual-Explanations-of-Vision-Transformer-Guided-by-
Self-Attention, ``Methods/AGCAM``: their ``AGCAM`` class and their modified
copy of timm's ViT, whose attention detaches its input and exposes hooks
before and after the softmax) was checked out outside the repository and run
once in a scratch venv with its one extra dependency, einops, that sees the
project's venv:

    /work/main/.venv/bin/python -m venv /tmp/m16-venv --system-site-packages
    /tmp/m16-venv/bin/pip install einops
    echo /work/main/.venv/lib/python3.11/site-packages \
        > /tmp/m16-venv/lib/python3.11/site-packages/zz_main_venv.pth
    PYTHONPATH=$PWD /tmp/m16-venv/bin/python \
        tests/attr/data/agcam/make_reference.py /path/to/their/checkout

Their ViT is built with the tiny configuration of ``tests/models.py`` and
loaded with the weights of ``timm_vit()`` (stored here too); their
``AGCAM.generate`` explains one image at a time, for the predicted class and
for class 3, with their default fusions (sum over heads, sum over layers) and
with mean over heads / max over layers.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from Methods.AGCAM.AGCAM import AGCAM  # noqa: E402
from Methods.AGCAM.ViT_for_AGCAM.models.vision_transformer import (  # noqa: E402
    VisionTransformer,
)

from tests.models import IMG, PATCH, images, timm_vit  # noqa: E402

model = timm_vit()
theirs = VisionTransformer(
    img_size=IMG,
    patch_size=PATCH,
    embed_dim=model.embed_dim,
    depth=len(model.blocks),
    num_heads=model.blocks[0].attn.num_heads,
    num_classes=model.num_classes,
    qkv_bias=True,
).eval()
theirs.load_state_dict(model.state_dict(), strict=True)
x = images(3, seed=9)
data = {"x": x.numpy()}
for k, v in model.state_dict().items():
    data[f"state/{k}"] = v.numpy()
for fusion in (("sum", "sum"), ("mean", "max")):
    method = AGCAM(theirs, head_fusion=fusion[0], layer_fusion=fusion[1])
    for target in (None, 3):
        maps, targets = [], []
        for i in range(len(x)):
            prediction, cam = method.generate(x[i : i + 1], cls_idx=target)
            maps.append(cam.detach().flatten().numpy())
            targets.append(int(prediction[0]) if target is None else target)
        key = f"{fusion[0]}_{fusion[1]}/{'pred' if target is None else target}"
        data[f"{key}/map"] = np.stack(maps)
        data[f"{key}/target"] = np.array(targets)
np.savez_compressed(Path(__file__).with_name("reference.npz"), **data)
print({k: v.shape for k, v in data.items() if not k.startswith("state/")})
