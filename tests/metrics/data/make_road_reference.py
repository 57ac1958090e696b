"""Produce ``road_reference.npz``: pytorch-grad-cam 1.5.7's ROAD values on small
fixed inputs, for ``test_road.py``.

Not part of the test run (grad-cam is not a dependency of the project: it pulls in
opencv, scikit-learn, matplotlib). It was run once, in a scratch venv that sees the
project venv's torch:

    /work/main/.venv/bin/python -m venv --system-site-packages /tmp/m16m-venv
    /tmp/m16m-venv/bin/pip install grad-cam==1.5.7
    PYTHONPATH=. /tmp/m16m-venv/bin/python tests/metrics/data/make_road_reference.py

Stored: the model weights (a small CNN), the images (two sizes: 16 x 16 and
20 x 12), the maps (continuous, with ties, and constant along rows), the targets
and, for every percentile 10..90 of ``ROADMostRelevantFirst`` /
``ROADLeastRelevantFirst``: the score changes (softmax and raw targets, noise-free
and with the default noise after ``torch.manual_seed``), the noise-free imputed
images, the imputed images with noise for percentiles 20 and 80, and
``ROADCombined`` with its default percentiles.
"""

from importlib.metadata import version

import numpy as np
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import (
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADCombined,
    ROADLeastRelevantFirst,
    ROADMostRelevantFirst,
)
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)

from tests.metrics._metric_models import small_cnn

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
SEED = 123
K = 4


def inputs(shape, seed):
    rng = np.random.RandomState(seed)
    B, H, W = shape
    x = rng.randn(B, 3, H, W).astype(np.float32)
    cams = np.stack(
        [
            rng.rand(H, W),  # continuous
            np.round(rng.rand(H, W) * 3) / 3,  # four levels: ties at thresholds
            np.repeat(rng.rand(H, 1), W, axis=1),  # constant along rows
        ]
    )[:B].astype(np.float32)
    return x, cams


def main():
    assert version("grad-cam") == "1.5.7", version("grad-cam")
    model = small_cnn(K)
    out = {f"w.{k}": v.numpy() for k, v in model.state_dict().items()}
    for name, shape in (("a", (3, 16, 16)), ("b", (2, 20, 12))):
        x, cams = inputs(shape, seed=len(name) + shape[1])
        xt = torch.from_numpy(x)
        target = model(xt).argmax(1).numpy()
        out[f"{name}.x"], out[f"{name}.cams"], out[f"{name}.target"] = x, cams, target
        kinds = {
            "softmax": [ClassifierOutputSoftmaxTarget(int(t)) for t in target],
            "raw": [ClassifierOutputTarget(int(t)) for t in target],
        }
        for kind, targets in kinds.items():
            for order, cls, remove in (
                ("morf", ROADMostRelevantFirst, RemoveMostRelevantFirst),
                ("lerf", ROADLeastRelevantFirst, RemoveLeastRelevantFirst),
            ):
                clean, noisy = [], []
                for p in PERCENTILES:
                    metric = PerturbationConfidenceMetric(
                        remove(p, NoisyLinearImputer(noise=0.0))
                    )
                    diff, imputed = metric(
                        xt, cams, targets, model, return_visualization=True
                    )
                    clean.append(diff)
                    if kind == "softmax":
                        out[f"{name}.imputed.{order}.{p}"] = imputed.numpy()
                    torch.manual_seed(SEED)
                    diff, imputed = cls(p)(
                        xt, cams, targets, model, return_visualization=True
                    )
                    noisy.append(diff)
                    if kind == "softmax" and p in (20, 80):
                        out[f"{name}.imputed_noise.{order}.{p}"] = imputed.numpy()
                out[f"{name}.{kind}.{order}.clean"] = np.stack(clean, 1)
                out[f"{name}.{kind}.{order}.noise"] = np.stack(noisy, 1)
            torch.manual_seed(SEED)
            out[f"{name}.{kind}.combined"] = ROADCombined()(xt, cams, targets, model)
    path = __file__.replace("make_road_reference.py", "road_reference.npz")
    np.savez_compressed(path, **out)


if __name__ == "__main__":
    main()
