"""Fixtures of the visualiser's tests: a tiny random-init timm ViT, a tiny
dataset, the Flask test client and a live server on 127.0.0.1."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch

from captum_vit.attr import _registry
from captum_vit.attr._base import ViTAttribution
from captum_vit.insights import AttributionVisualizer, Batch
from tests.models import CLASSES, IMG, timm_vit

CLASS_NAMES = [f"class {i}" for i in range(CLASSES)]


def tiny_images(n: int = 6, seed: int = 0) -> torch.Tensor:
    """Images in [0, 1] with a bright square at a different place in each."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 3, IMG, IMG, generator=g)
    for i in range(n):
        r, c = (i * 5) % (IMG - 10), (i * 9) % (IMG - 10)
        x[i, :, r : r + 10, c : c + 10] = 0.9
    return x


def make_visualizer(**kwargs) -> AttributionVisualizer:
    images = tiny_images()
    labels = torch.arange(images.shape[0]) % CLASSES
    defaults = dict(
        models=[timm_vit()],
        classes=CLASS_NAMES,
        dataset=[Batch(images[:3], labels[:3]), Batch(images[3:], labels[3:])],
        score_func=lambda out: out.softmax(-1),
        replicas=2,
        max_upload_bytes=256 * 1024,
        max_upload_pixels=1024 * 1024,
    )
    defaults.update(kwargs)
    for key in ("max_upload_bytes", "max_upload_pixels"):
        if defaults[key] is None:  # the visualiser's own default
            del defaults[key]
    return AttributionVisualizer(**defaults)


def png_bytes(w: int = 40, h: int = 30, color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def vis():
    v = make_visualizer()
    yield v
    v.stop()


@pytest.fixture()
def client(vis):
    return vis.app.test_client()


@pytest.fixture(scope="module")
def live(vis):
    """``http://127.0.0.1:<port>`` of ``vis`` served from a thread."""
    port = vis.serve(port=0, blocking=False, quiet=True)
    yield f"http://127.0.0.1:{port}"
    vis.stop()


class _Gated(ViTAttribution):
    """A method that waits for a test to open its gate (a 'long' method)."""

    gate = threading.Event()
    started = threading.Event()

    def _attribute(self, inputs, target, args):
        _Gated.started.set()
        if not _Gated.gate.wait(timeout=30):
            raise RuntimeError("the test never opened the gate")
        gh, gw = self.adapter.grid_size(tuple(inputs.shape[-2:]))
        return torch.linspace(0, 1, gh * gw).expand(inputs.shape[0], -1)


@pytest.fixture()
def gated_method():
    """Register ``_test_gated`` for the duration of one test."""
    _Gated.gate.clear()
    _Gated.started.clear()
    _registry.register_method("_test_gated")(_Gated)
    try:
        yield _Gated
    finally:
        _Gated.gate.set()
        _registry._METHODS.pop("_test_gated", None)


def np_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (IMG, IMG, 3), np.uint8)
