"""Produce ``quantus_reference.npz``: Quantus 0.6.0's numbers on tiny fixed inputs.

Not part of the test run (Quantus is not a dependency of the project: it pulls in
opencv, scikit-image, pandas, matplotlib). It was run once, in a scratch venv:

    python3 -m venv /tmp/qenv --system-site-packages
    /tmp/qenv/bin/pip install quantus==0.6.0
    .venv/bin/python tests/metrics/data/make_quantus_reference.py /tmp/qenv

(the project's venv supplies torch 2.14.1 / numpy; the scratch venv's site-packages are
appended to ``sys.path`` for quantus and its dependencies). The inputs, the model
weights, the subsets Quantus drew and Quantus' outputs are all stored in the .npz, so
``test_quantus_parity.py`` recomputes our values on exactly the same data.
"""

import glob
import sys

import numpy as np
import torch

sys.path.append(glob.glob(f"{sys.argv[1]}/lib/python3*/site-packages")[0])
import quantus  # noqa: E402

assert quantus.__version__ == "0.6.0", quantus.__version__
# Quantus 0.6.0 calls np.trapz, removed in numpy 2.4 (the venv's numpy): same function.
if not hasattr(np, "trapz"):
    np.trapz = np.trapezoid

rng = np.random.RandomState(0)
B, H, W, K = 4, 8, 8, 3
x = rng.randn(B, 1, H, W).astype(np.float32)
a = rng.randn(B, 1, H, W).astype(np.float32)  # continuous: no ties in the order
a[0, 0, 2, 2] = 5.0  # maxima inside the masks of images 0 and 2 (pointing-game hits)
a[2, 0, 1, 6] = 5.0
y = np.array([0, 1, 2, 1])
s = np.zeros((B, 1, H, W), dtype=np.float32)
s[0, 0, 1:4, 1:4] = 1
s[1, 0, 4:8, 0:3] = 1
s[2, 0, 0:2, 5:8] = 1
s[3, 0, 2:6, 2:6] = 1
w1 = (rng.randn(16, H * W) / 8).astype(np.float32)
b1 = (rng.randn(16) / 8).astype(np.float32)
w2 = (rng.randn(K, 16) / 4).astype(np.float32)
b2 = (rng.randn(K) / 4).astype(np.float32)


def make_model():
    m = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(H * W, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, K),
    )
    with torch.no_grad():
        m[1].weight.copy_(torch.from_numpy(w1))
        m[1].bias.copy_(torch.from_numpy(b1))
        m[3].weight.copy_(torch.from_numpy(w2))
        m[3].bias.copy_(torch.from_numpy(b2))
    return m.eval()


model = make_model()
common = dict(model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu")

pg = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)
pointing = np.array(pg(s_batch=s, **common), dtype=np.float64)

ec = quantus.EffectiveComplexity(
    eps=0.5, abs=True, normalise=False, disable_warnings=True
)
complexity = np.array(ec(**common), dtype=np.int64)

# FaithfulnessCorrelation draws its subsets with np.random.choice: record them.
drawn = []
_choice = np.random.choice


def recording_choice(*args, **kwargs):
    out = _choice(*args, **kwargs)
    drawn.append(np.array(out))
    return out


np.random.seed(0)
np.random.choice = recording_choice
fc = quantus.FaithfulnessCorrelation(
    nr_runs=10,
    subset_size=8,
    perturb_baseline=0.0,
    abs=False,
    normalise=False,
    return_aggregate=False,
    disable_warnings=True,
)
faith = np.array(fc(softmax=False, **common), dtype=np.float64)
np.random.choice = _choice
# Quantus draws, for each run, one subset per image: (runs * B, 8) -> (B, runs, 8)
subsets = np.stack(drawn).reshape(10, B, 8).transpose(1, 0, 2)

pf = quantus.PixelFlipping(
    features_in_step=4,
    perturb_baseline=0.0,
    abs=False,
    normalise=False,
    disable_warnings=True,
)
pixel_flipping = np.array(pf(softmax=True, **common), dtype=np.float64)
pf_auc = quantus.PixelFlipping(
    features_in_step=4,
    perturb_baseline=0.0,
    abs=False,
    normalise=False,
    return_auc_per_sample=True,
    disable_warnings=True,
)
pixel_flipping_auc = np.array(pf_auc(softmax=True, **common), dtype=np.float64)

rp = quantus.RegionPerturbation(
    patch_size=2,
    order="morf",
    regions_evaluation=16,
    perturb_baseline=0.0,
    abs=False,
    normalise=False,
    disable_warnings=True,
)
region = np.array(rp(softmax=True, **common), dtype=np.float64)

np.savez(
    "tests/metrics/data/quantus_reference.npz",
    x=x,
    a=a,
    y=y,
    s=s,
    w1=w1,
    b1=b1,
    w2=w2,
    b2=b2,
    pointing=pointing,
    complexity=complexity,
    faith=faith,
    subsets=subsets,
    pixel_flipping=pixel_flipping,
    pixel_flipping_auc=pixel_flipping_auc,
    region=region,
)
print("pointing", pointing, "complexity", complexity)
print("faith", faith)
print("pixel_flipping", pixel_flipping.shape, "auc", pixel_flipping_auc)
print("region", region.shape)
