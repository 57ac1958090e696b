"""Produce ``reference.npz``: openvino-xai 1.1.0's ViT-ReciproCAM on tiny timm ViTs.

Not part of the test run (openvino-xai pulls in OpenVINO, opencv and an older
numpy). It was run once, in a scratch venv that also sees the project's venv:

    /work/main/.venv/bin/python -m venv /tmp/m16-venv --system-site-packages
    /tmp/m16-venv/bin/pip install openvino-xai==1.1.0
    echo /work/main/.venv/lib/python3.11/site-packages \
        > /tmp/m16-venv/lib/python3.11/site-packages/zz_main_venv.pth
    PYTHONPATH=$PWD /tmp/m16-venv/bin/python \
        tests/attr/data/vit_reciprocam/make_reference.py

Two models (the tiny sharpened ViT of ``tests/models.py``: 32x32 images, 8x8
patches, a 4x4 grid, 2 blocks; once with class-token pooling and once with
average pooling), three images. openvino-xai runs

* ``ov``: its OpenVINO version on the model exported with
  ``openvino.convert_model`` (the XAI branch is inserted into the graph:
  masked residual stream and masked norm output), compiled with float32
  inference precision (the CPU plugin's default may be bf16); with the
  defaults (Gaussian kernel, class token kept) and, on the class-token model,
  with each switch off (``ov_1x1``, ``ov_no_cls``);
* ``torch``: its PyTorch version (``TorchViTReciproCAM``: a forward hook on the
  last block's first norm that leaves the residual stream unmasked; one image
  per call), class-token model only, defaults and ``use_gaussian=False``
  (``torch_no_cls`` is kept too: it differs from ``ov_no_cls`` because of the
  unmasked residual, which then keeps the class token).

All with ``embed_scaling=False`` (raw logits, no 0-255 scaling). The weights,
the inputs and the maps (all classes, ``(image, class, gh, gw)``) are stored.
"""

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from openvino_xai.methods.white_box.recipro_cam import ViTReciproCAM

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from tests.models import images, timm_vit  # noqa: E402

assert version("openvino-xai") == "1.1.0", version("openvino-xai")


def ov_maps(model, x, **kwargs):
    ovm = ov.convert_model(model, example_input=x[:1], input=[(-1, 3, 32, 32)])
    method = ViTReciproCAM(ovm, embed_scaling=False, prepare_model=False, **kwargs)
    compiled = ov.Core().compile_model(
        method.prepare_model(load_model=False),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32"},
    )
    maps = []
    for i in range(len(x)):
        out = compiled(x[i : i + 1].numpy())
        maps.append(out["saliency_map"][0])
    return np.stack(maps)


def torch_maps(model, x, **kwargs):
    method = ViTReciproCAM(model, embed_scaling=False, input_size=(32, 32), **kwargs)
    maps = []
    for i in range(len(x)):
        out = method.model_forward(x[i : i + 1].numpy(), preprocess=False)
        maps.append(out["saliency_map"][0])
    return np.stack(maps)


x = images(3, seed=5)
data = {"x": x.numpy()}
for name, model in {"token": timm_vit(), "avg": timm_vit(global_pool="avg")}.items():
    for k, v in model.state_dict().items():
        data[f"{name}/state/{k}"] = v.numpy()
    data[f"{name}/ov"] = ov_maps(model, x)
    with torch.no_grad():
        data[f"{name}/logits"] = model(x).numpy()
    if name == "token":
        data[f"{name}/ov_1x1"] = ov_maps(model, x, use_gaussian=False)
        data[f"{name}/ov_no_cls"] = ov_maps(model, x, cls_token=False)
        data[f"{name}/torch"] = torch_maps(model, x)
        data[f"{name}/torch_1x1"] = torch_maps(model, x, use_gaussian=False)
        data[f"{name}/torch_no_cls"] = torch_maps(model, x, use_cls_token=False)
np.savez_compressed(Path(__file__).with_name("reference.npz"), **data)
print({k: v.shape for k, v in data.items() if "/state/" not in k})
