"""ViT-ReciproCAM against openvino-xai's implementations (stored outputs) and
against a naive per-patch loop over timm's own modules."""

from __future__ import annotations

import pytest
import torch

import captum_vit as cv
from captum_vit.attr.vit_reciprocam import mosaic_masks
from tests.attr.data import load, tiny_vit
from tests.models import CLASSES, images, timm_vit

REF = load("vit_reciprocam")


def naive_reciprocam(model, x, target, layer=-1, gaussian=True, keep_prefix=True):
    """One masked copy at a time, block by block, with the kernel written out."""
    npre = model.num_prefix_tokens
    layer %= len(model.blocks)
    out = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            h = model.patch_embed(x[b : b + 1])
            h = model.norm_pre(model.patch_drop(model._pos_embed(h)))
            for blk in model.blocks[:layer]:
                h = blk(h)
            N = h.shape[1]
            g = int(round((N - npre) ** 0.5))
            row = []
            for i in range(g):
                for j in range(g):
                    m = torch.zeros(N, 1, dtype=h.dtype)
                    m[:npre] = 1.0 if keep_prefix else 0.0
                    for di in (-1, 0, 1):
                        for dj in (-1, 0, 1):
                            if 0 <= i + di < g and 0 <= j + dj < g:
                                w = (2 - abs(di)) * (2 - abs(dj)) / 16
                                if not gaussian:
                                    w = float(di == 0 and dj == 0)
                                m[npre + (i + di) * g + j + dj] = w
                    blk = model.blocks[layer]
                    y = m * h + blk.ls1(blk.attn(m * blk.norm1(h)))
                    y = y + blk.ls2(blk.mlp(blk.norm2(y)))
                    for later in model.blocks[layer + 1 :]:
                        y = later(y)
                    row.append(model.forward_head(model.norm(y))[0, target[b]])
            out.append(torch.stack(row))
    return torch.stack(out)


def test_kernel_is_the_papers_gaussian():
    m = mosaic_masks(3, 4).reshape(3, 4, 3, 4)
    # patch (1, 1): the whole 3x3 kernel; patch (0, 3): a corner, cut
    expected = torch.zeros(3, 4)
    expected[0:3, 0:3] = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    torch.testing.assert_close(m[1, 1], expected)
    expected = torch.zeros(3, 4)
    expected[0:2, 2:4] = torch.tensor([[2, 4], [1, 2]]) / 16
    torch.testing.assert_close(m[0, 3], expected)
    torch.testing.assert_close(mosaic_masks(3, 4, use_gaussian=False), torch.eye(12))


@pytest.mark.parametrize(
    "key,options",
    [
        ("token/ov", {}),
        ("token/ov_1x1", {"use_gaussian": False}),
        ("token/ov_no_cls", {"use_cls_token": False}),
        ("token/torch", {}),
        ("token/torch_1x1", {"use_gaussian": False}),
        ("avg/ov", {}),
    ],
)
def test_matches_openvino_xai(key, options):
    """openvino-xai 1.1.0, OpenVINO graph (``ov``) and PyTorch hook
    (``torch``) versions, every class; see data/vit_reciprocam."""
    name = key.split("/")[0]
    pool = {"global_pool": "avg"} if name == "avg" else {}
    model = tiny_vit(REF, f"{name}/state/", **pool)
    x = torch.from_numpy(REF["x"])
    method = cv.ViTReciproCAM(model, **options)
    ours = torch.stack(
        [method.attribute(x, target=c, output="tokens") for c in range(CLASSES)], 1
    )
    expected = torch.from_numpy(REF[key])
    rel = (ours - expected).abs().max() / expected.abs().max()
    assert rel < 1e-5, rel


def test_pytorch_hook_version_differs_without_class_token():
    """openvino-xai's PyTorch version leaves the residual stream unmasked; with
    the class token dropped this keeps it on the residual, the OpenVINO version
    (and this method) drop it there too: the two references disagree."""
    a, b = REF["token/ov_no_cls"], REF["token/torch_no_cls"]
    assert abs(a - b).max() > 0.1 * abs(a).max()


@pytest.mark.parametrize(
    "layer,gaussian,keep_prefix,kwargs",
    [
        (-1, True, True, {}),
        (0, True, True, {}),
        (-1, False, False, {}),
        (0, True, True, {"global_pool": "avg", "reg_tokens": 2}),
        (-1, True, False, {"global_pool": "avg", "class_token": False}),
    ],
)
def test_equals_naive_loop(layer, gaussian, keep_prefix, kwargs):
    model = timm_vit(**kwargs).double()
    x = images(2).double()
    target = torch.tensor([1, 4])
    expected = naive_reciprocam(model, x, target, layer, gaussian, keep_prefix)
    method = cv.ViTReciproCAM(
        model, layer=layer, use_gaussian=gaussian, use_cls_token=keep_prefix
    )
    got = method.attribute(x, target=target, output="tokens").flatten(1)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("internal_batch_size", [1, 5])
def test_internal_batch_size_changes_nothing(internal_batch_size):
    model, x = timm_vit(), images(2)
    full = cv.ViTReciproCAM(model).attribute(x, target=2, output="tokens")
    chunked = cv.ViTReciproCAM(
        model, internal_batch_size=internal_batch_size
    ).attribute(x, target=2, output="tokens")
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)


def test_needs_no_gradient_and_shows_progress(capsys):
    model, x = timm_vit(), images(1)
    with torch.no_grad():
        a = cv.ViTReciproCAM(model, show_progress=True).attribute(x, target=0)
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert "ViT-ReciproCAM" in capsys.readouterr().err


def test_bad_options():
    model = timm_vit()
    with pytest.raises(ValueError, match="internal_batch_size"):
        cv.ViTReciproCAM(model, internal_batch_size=0)
    with pytest.raises(ValueError, match="layer"):
        cv.ViTReciproCAM(model, layer=2)
