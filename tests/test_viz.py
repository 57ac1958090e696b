"""captum_vit.viz: pictures as files hold them (16-bit, grey, palette), the
letterbox that keeps their aspect ratio, and the method grid."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from captum_vit.viz import (
    Letterbox,
    content_region,
    image_to_array,
    letterbox,
    load_image,
    method_grid,
)


def _reopen(img: Image.Image, fmt: str = "PNG") -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_16_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    img = _reopen(Image.fromarray(ramp))
    assert img.mode.startswith("I")
    arr = image_to_array(img)
    assert arr.shape == (48, 64, 3) and arr.dtype == np.float32
    np.testing.assert_allclose(arr[..., 0], ramp / 65535.0, atol=1e-6)
    # what convert("RGB") made of it: nearly white
    assert np.asarray(img.convert("RGB")).mean() > 250


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "1"])
def test_8_bit_modes_match_pillows_rgb(mode):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).convert(
        mode
    )
    expected = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    np.testing.assert_array_equal(image_to_array(img), expected)


def test_float_images_are_kept_in_range_or_min_max_scaled():
    a = np.linspace(0.2, 0.8, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(image_to_array(Image.fromarray(a, mode="F"))[..., 1], a)
    b = Image.fromarray(a * 1000.0, mode="F")
    out = image_to_array(b)[..., 0]
    assert out.min() == pytest.approx(0.0) and out.max() == pytest.approx(1.0)


def test_load_image_reduces_and_fails_on_truncated_files(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (800, 400), (200, 10, 10)).save(path, quality=95)
    arr = load_image(str(path), max_side=200)
    assert arr.shape == (100, 200, 3)
    assert arr[..., 0].mean() == pytest.approx(200 / 255, abs=0.02)
    cut = tmp_path / "cut.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:400])
    with pytest.raises(OSError):
        load_image(str(cut))


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_fill():
    pic = np.zeros((200, 300, 3), np.float32)
    pic[70:130, 105:195] = 1.0  # a 90 x 60 box
    x, box = letterbox(pic, 60, fill=(0.25, 0.5, 0.75))
    assert x.shape == (3, 60, 60)
    assert box == Letterbox(top=10, left=0, height=40, width=60, size=(60, 60))
    # bands are the fill value, exactly
    assert torch.all(x[:, :10] == torch.tensor([0.25, 0.5, 0.75])[:, None, None])
    assert torch.all(x[:, 50:] == torch.tensor([0.25, 0.5, 0.75])[:, None, None])
    # the box is still 3:2 (18 x 12 pixels)
    ys, xs = torch.nonzero(x[0] > 0.5, as_tuple=True)
    h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
    assert w / h == pytest.approx(1.5, rel=0.15)
    # a picture of the input's size is passed through untouched
    same, box = letterbox(torch.rand(3, 8, 6), (8, 6))
    assert box == Letterbox(0, 0, 8, 6, (8, 6))
    # portrait pictures get bands left and right
    _, box = letterbox(np.zeros((300, 100, 3), np.float32), (30, 30))
    assert (box.top, box.left, box.height, box.width) == (0, 10, 30, 10)


def test_content_region_cuts_pixel_maps_and_token_grids():
    box = Letterbox(top=10, left=0, height=40, width=60, size=(60, 60))
    attr = torch.zeros(3, 60, 60)
    attr[:, 10:50] = 1.0
    region = content_region(attr, box)
    assert region.shape == (3, 40, 60) and torch.all(region == 1.0)
    tokens = torch.arange(36.0).reshape(6, 6)  # 10-pixel patches
    assert content_region(tokens, box).shape == (4, 6)
    assert content_region(tokens, None) is tokens


def test_method_grid_over_original_pictures_with_a_colour_bar():
    import matplotlib

    matplotlib.use("Agg")
    pic = np.full((200, 300, 3), 0.2, np.float32)
    _, box = letterbox(pic, 64)
    attr = torch.zeros(1, 3, 64, 64)
    attr[0, :, box.top : box.top + 4, :4] = 1.0  # the picture's top-left corner
    fig = method_grid([pic], {"m": attr}, titles=["prediction: x (0.90)"], boxes=[box])
    axes = fig.axes
    heat = axes[1].get_images()[1].get_array()
    assert heat.shape == (200, 300)  # the map covers the picture, not the input
    assert np.unravel_index(np.argmax(heat), heat.shape)[0] < 20
    assert axes[0].get_ylabel() == "prediction: x (0.90)"  # left of the row
    bars = [ax for ax in axes if ax.get_ylabel().startswith("relevance")]
    assert len(bars) == 1
    assert (
        len(
            method_grid(
                torch.rand(2, 3, 8, 8), {"m": torch.rand(2, 8, 8)}, colorbar=False
            ).axes
        )
        == 4
    )


def test_signed_maps_are_centred_at_zero_on_a_diverging_map():
    import matplotlib

    from captum_vit.viz import SIGNED_CMAP, is_signed, normalize_map

    matplotlib.use("Agg")
    signed = torch.zeros(2, 3, 8, 8)
    signed[0, :, 0, 0], signed[0, :, 7, 7] = 2.0, -1.0
    positive = torch.rand(2, 8, 8)
    assert is_signed(signed) and not is_signed(positive)
    assert not is_signed(positive - 1e-6)  # rounding noise is not a sign
    np.testing.assert_allclose(
        normalize_map(signed[0], signed=True)[[0, 7], [0, 7]], [1.0, -0.5]
    )
    assert normalize_map(signed[0])[7, 7] == 0.0  # unsigned: min-max
    fig = method_grid(torch.rand(2, 3, 8, 8), {"lrp": signed, "rollout": positive})
    lrp_cell, rollout_cell = fig.axes[1], fig.axes[2]
    heat = lrp_cell.get_images()[1]
    assert heat.get_cmap().name == SIGNED_CMAP
    assert heat.norm.vmin == -1.0 and heat.norm.vmax == 1.0
    assert rollout_cell.get_images()[1].norm.vmin == 0.0
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert bars == [
        "relevance (each map scaled to [0, 1])",
        "signed relevance (each map / its max |value|)",
    ]
    # forced either way, or by name
    assert (
        len(method_grid(torch.rand(1, 3, 8, 8), {"m": positive[:1]}, signed=True).axes)
        == 3
    )
    with pytest.raises(ValueError, match="not among"):
        method_grid(torch.rand(1, 3, 8, 8), {"m": positive[:1]}, signed=["x"])
