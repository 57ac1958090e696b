"""Produce ``reference.npz``: the TIS authors' code on a tiny timm ViT.

Not part of the test run. The authors' code (github.com/aenglebert/
Transformer_Input_Sampling, commit e66c0f8, ``tis/tis.py``) was checked out
outside the repository and run once in a scratch venv that has its one extra
dependency, fast-pytorch-kmeans 0.1.6, and sees the project's venv:

    /work/main/.venv/bin/python -m venv /tmp/m16-venv --system-site-packages
    /tmp/m16-venv/bin/pip install fast-pytorch-kmeans==0.1.6
    echo /work/main/.venv/lib/python3.11/site-packages \
        > /tmp/m16-venv/lib/python3.11/site-packages/zz_main_venv.pth
    PYTHONPATH=$PWD /tmp/m16-venv/bin/python \
        tests/attr/data/tis/make_reference.py /path/to/Transformer_Input_Sampling

The authors' k-means draws its initial centroids with NumPy's global
generator (``np.random.choice``); the script seeds it and records the indices
drawn, so the test can start our k-means from the same centroids. For each
image and case it stores the encoder activations, the k-means centroids (raw
masks), the kept token indices, the scores and the saliency (computed with
``normalise=False``) of the authors' ``TIS`` methods, called one step after
the other as ``TIS.__call__`` does.
"""

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from tis import TIS  # noqa: E402

from tests.models import images, timm_vit  # noqa: E402

assert version("fast-pytorch-kmeans") == "0.1.6"

CASES = {  # name: (n_masks, tokens_ratio, batch_size, target or None)
    "m16_r05": (16, 0.5, 5, None),
    # a batch of the authors must not span two ratios (their torch.cat fails)
    "m24_r025_05_t3": (24, [0.25, 0.5], 8, 3),
}

model = timm_vit()
x = images(2, seed=7)
data = {"x": x.numpy()}
for k, v in model.state_dict().items():
    data[f"state/{k}"] = v.numpy()
for case, (n_masks, ratio, bs, target) in CASES.items():
    for i in range(len(x)):
        key = f"{case}/{i}"
        tis = TIS(
            model,
            n_masks=n_masks,
            batch_size=bs,
            tokens_ratio=ratio,
            normalise=False,
            verbose=False,
        )
        image = x[i : i + 1]
        with torch.no_grad():
            predicted, acts = tis.get_encoder_activations(image)
            n_points = acts.shape[-1]
            np.random.seed(100 + i)
            init = np.random.choice(n_points, size=[n_masks], replace=False)
            np.random.seed(100 + i)  # the same draw inside fast-pytorch-kmeans
            raw = tis.generate_raw_masks(acts)
            mask_list, index_list = tis.generate_binary_masks(raw)
            class_idx = predicted if target is None else target
            scores = tis.generate_scores(image, class_idx, index_list)
            saliency = tis.generate_saliency(image, scores, mask_list)
        data[f"{key}/target"] = np.array(int(class_idx))
        data[f"{key}/activations"] = acts[0, 1:].numpy()
        data[f"{key}/init"] = init
        data[f"{key}/centroids"] = raw.numpy()
        for j in range(len(index_list) // n_masks):  # one block of masks per ratio
            block = index_list[j * n_masks : (j + 1) * n_masks]
            data[f"{key}/index{j}"] = torch.stack(block).numpy()
        data[f"{key}/scores"] = scores.numpy()
        data[f"{key}/saliency"] = saliency.flatten().numpy()
np.savez_compressed(Path(__file__).with_name("reference.npz"), **data)
print({k: v.shape for k, v in data.items() if not k.startswith("state/")})
