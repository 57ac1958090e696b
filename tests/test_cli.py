"""``captum-vit explain`` and ``captum-vit benchmark`` end to end: the embedded
default, timm-style checkpoint files (state_dict, safetensors), image files."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from captum_vit.benchmark import load_model
from captum_vit.cli import build_parser, main
from tests.benchmark._tiny import write_tiny_checkpoint

METHODS = ["--methods", "raw_attention,rollout"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _timm_tiny(seed=0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=3
    ).eval()


def _check_explain_outputs(out, n_images, methods, with_mask):
    assert (out / "explanations.png").stat().st_size > 0
    summary = json.loads((out / "explanations.json").read_text())
    assert summary["methods"] == methods and len(summary["images"]) == n_images
    for entry in summary["images"]:
        assert set(entry["scores"]) == set(methods)
        for scores in entry["scores"].values():
            assert 0.0 <= scores["deletion_auc"] <= 1.0
            assert 0.0 <= scores["insertion_auc"] <= 1.0
            assert ("pointing_game" in scores) == with_mask
    assert set(summary["mean_scores"]) == set(methods)
    return summary


def test_explain_without_arguments_uses_the_embedded_model(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["explain", "--out", str(out), "--samples", "2", *METHODS]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'explanations.png'}" in printed
    summary = _check_explain_outputs(
        out, 2, ["raw_attention", "rollout"], with_mask=True
    )
    assert "embedded model 'synthetic_vit'" in summary["model"]
    first = summary["images"][0]
    assert first["label_name"] == "disk" and first["source"].startswith("synthetic")
    assert first["prediction_name"] in load_model().classes
    hits = [e["scores"]["raw_attention"]["pointing_game"] for e in summary["images"]]
    assert set(hits) <= {0.0, 1.0}


def test_explain_synthetic_swin_with_the_methods_that_apply(tmp_path):
    """``--model synthetic_swin`` without ``--methods``: the default methods
    that apply to a windowed, hierarchical model."""
    out = tmp_path / "swin"
    argv = ["explain", "--model", "synthetic_swin", "--out", str(out)]
    assert main([*argv, "--samples", "2"]) == 0
    expected = ["raw_attention", "rollout", "grad_sam", "generic_attention"]
    expected.append("transformer_lrp")
    summary = _check_explain_outputs(out, 2, expected, with_mask=True)
    assert "embedded model 'synthetic_swin' (6 blocks" in summary["model"]


def test_explain_timm_state_dict_checkpoint_on_image_files(tmp_path):
    model = _timm_tiny()
    ckpt = tmp_path / "tiny_vit.pth"  # timm-style: the state_dict under a key
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, ckpt)
    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
        files.append(str(path))
    args = ["--model", str(ckpt), "--model-name", "vit_tiny_patch16_224"]
    args += ["--img-size", "32", "--out", str(tmp_path / "o")]
    assert main(["explain", *files, *args, *METHODS]) == 0
    summary = _check_explain_outputs(
        tmp_path / "o", 2, ["raw_attention", "rollout"], with_mask=False
    )
    assert summary["images"][1]["source"] == files[1]
    assert summary["model"].startswith("checkpoint")
    lm = load_model(str(ckpt), "vit_tiny_patch16_224", img_size=32)
    assert lm.image_size == 32 and len(lm.classes) == 3  # read from the head
    for k, v in model.state_dict().items():
        assert torch.equal(lm.model.state_dict()[k], v), k


def test_explain_safetensors_checkpoint_on_bundled_samples(tmp_path):
    from safetensors.torch import save_file

    model = _timm_tiny(1)
    ckpt = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    args = ["--model", str(ckpt), "--model-name", "vit_tiny_patch16_224"]
    args += ["--img-size", "32", "--samples", "2", "--out", str(tmp_path / "o")]
    assert main(["explain", *args, "--methods", "grad_sam", "--target", "1"]) == 0
    summary = _check_explain_outputs(tmp_path / "o", 2, ["grad_sam"], with_mask=True)
    assert [e["target"] for e in summary["images"]] == [1, 1]
    # the label is the benchmark's class, the prediction one of the model's
    assert summary["images"][1]["label_name"] == "square"
    assert summary["images"][1]["target_name"] == "1"


def test_checkpoint_errors(tmp_path):
    ckpt = tmp_path / "m.pth"
    torch.save(_timm_tiny().state_dict(), ckpt)
    with pytest.raises(ValueError, match="--model-name"):
        main(["explain", "--model", str(ckpt)])
    with pytest.raises(FileNotFoundError):
        main(["explain", "--model", str(tmp_path / "missing.pth")])
    torch.save({"not": "weights"}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="state_dict"):
        load_model(str(tmp_path / "bad.pth"), "vit_tiny_patch16_224")


def test_benchmark_writes_table_csv_and_plots(tmp_path, capsys):
    ckpt = write_tiny_checkpoint(tmp_path)
    out = tmp_path / "bench"
    argv = ["benchmark", "--model", ckpt, "--limit", "4", *METHODS, "--out", str(out)]
    argv += ["--metrics", "deletion,segmentation", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    md = (out / "table.md").read_text()
    assert md in printed and md.startswith(
        "| method | deletion_auc ↓ | seg_pixel_acc ↑"
    )
    csv = (out / "table.csv").read_text().splitlines()
    assert csv[0] == "method,deletion_auc,seg_pixel_acc,seg_miou,seg_ap,seg_f1"
    assert [r.split(",")[0] for r in csv[1:]] == ["raw_attention", "rollout"]
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == sorted(f"{c}.png" for c in csv[0].split(",")[1:])


def test_benchmark_arguments():
    args = build_parser().parse_args(["benchmark", "--dataset", "cifar10", "/d"])
    assert args.dataset == ["cifar10", "/d"] and args.limit is None
    with pytest.raises(SystemExit, match="needs --model"):
        main(["benchmark", "--dataset", "imagenet", "/nowhere"])
    with pytest.raises(SystemExit, match="at most one PATH"):
        main(["benchmark", "--dataset", "imagenet", "/a", "/b"])
