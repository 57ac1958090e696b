"""``captum-vit explain`` and ``captum-vit benchmark`` end to end: the embedded
default, timm-style checkpoint files (state_dict, safetensors), image files."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from captum_vit.benchmark import load_model
from captum_vit.benchmark._models import ModelLoadError
from captum_vit.cli import build_parser, main
from tests.benchmark._tiny import write_tiny_checkpoint

METHODS = ["--methods", "raw_attention,rollout"]


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


def usage_error(argv, capsys) -> str:
    """Run ``main(argv)``: it must end with status 2 and one line on stderr."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 or err.startswith("usage:"), err
    return err.splitlines()[-1]


@pytest.fixture()
def no_model_load(monkeypatch):
    """Fail the test if the model is loaded (arguments are checked first)."""
    import captum_vit.benchmark as bench

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(bench, "load_model", refuse)


def _png(path, w=40, h=30, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_bad_image_files_are_one_line_errors(tmp_path, capsys, no_model_load):
    err = usage_error(["explain", str(tmp_path / "missing.png")], capsys)
    assert err == f"captum-vit explain: error: no image file {tmp_path / 'missing.png'}"
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    err = usage_error(["explain", str(text)], capsys)
    assert "is not an image file" in err
    good = _png(tmp_path / "good.png", 64, 48)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(good, "rb").read()[:300])
    err = usage_error(["explain", good, str(truncated)], capsys)
    assert str(truncated) in err and "unreadable image" in err


def test_methods_are_checked_before_the_model_loads(capsys, no_model_load):
    err = usage_error(["explain", "--methods", "rollout,no_such"], capsys)
    assert "unknown method(s) no_such" in err and "raw_attention" in err
    err = usage_error(["benchmark", "--methods", "nope", "--no-progress"], capsys)
    assert "unknown method(s) nope" in err


def test_methods_with_spaces_after_commas(tmp_path):
    out = tmp_path / "o"
    argv = ["explain", "--samples", "1", "--out", str(out)]
    assert main(argv + ["--methods", "raw_attention, rollout"]) == 0
    summary = json.loads((out / "explanations.json").read_text())
    assert summary["methods"] == ["raw_attention", "rollout"]


def test_targets_out_of_range(capsys):
    n = len(load_model().classes)
    err = usage_error(["explain", "--target", "99", "--samples", "1"], capsys)
    assert f"--target 99 is out of range: the model has {n} classes" in err
    err = usage_error(["explain", "--target", "-1"], capsys)
    assert "--target: must be at least 0" in err
    err = usage_error(["explain", "--samples", "0"], capsys)
    assert "--samples: must be at least 1" in err


def test_benchmark_metric_limit_is_checked(capsys):
    for bad in ("saco", "saco=", "saco=0", "saco=x"):
        err = usage_error(["benchmark", "--metric-limit", bad], capsys)
        assert f"--metric-limit takes METRIC=N with N >= 1, got {bad!r}" in err


def test_embedded_model_refuses_another_img_size(capsys):
    err = usage_error(["explain", "--img-size", "128"], capsys)
    assert "--img-size 128" in err and "takes 64 px images" in err
    assert main(["explain", "--img-size", "64", "--samples", "1", *METHODS]) == 0


def test_checkpoint_errors(tmp_path, capsys):
    ckpt = tmp_path / "m.pth"
    torch.save(_timm_tiny().state_dict(), ckpt)
    err = usage_error(["explain", "--model", str(ckpt)], capsys)
    assert "--model-name" in err
    err = usage_error(["explain", "--model", str(tmp_path / "missing.pth")], capsys)
    assert "no checkpoint file" in err
    torch.save({"not": "weights"}, tmp_path / "bad.pth")
    with pytest.raises(ModelLoadError, match="state_dict"):
        load_model(str(tmp_path / "bad.pth"), "vit_tiny_patch16_224")
    # a whole pickled model: say what to save instead (no add_safe_globals)
    torch.save(_timm_tiny(), tmp_path / "whole.pth")
    argv = ["explain", "--model", str(tmp_path / "whole.pth")]
    err = usage_error(argv + ["--model-name", "vit_tiny_patch16_224"], capsys)
    assert "whole pickled object" in err and "state_dict()" in err
    assert "add_safe_globals" not in err
    # a file that is no checkpoint at all
    (tmp_path / "x.pt").write_bytes(open(_png(tmp_path / "x.png"), "rb").read())
    err = usage_error(
        ["explain", "--model", str(tmp_path / "x.pt"), "--model-name", "resnet18"],
        capsys,
    )
    assert "not a PyTorch checkpoint" in err


def test_checkpoint_of_another_architecture_is_summarised(tmp_path, capsys):
    ckpt = tmp_path / "vit.pth"
    torch.save(_timm_tiny().state_dict(), ckpt)
    argv = ["explain", "--model", str(ckpt), "--model-name", "resnet18"]
    err = usage_error(argv, capsys)
    assert "does not fit --model-name resnet18" in err
    assert "missing" in err and "unexpected" in err
    assert len(err) < 600  # a summary, not hundreds of keys
    argv = ["explain", "--model", str(ckpt), "--model-name", "vit_tiny_patch16_224"]
    err = usage_error(argv, capsys)  # trained at 32 px, created at 224
    assert "of another shape" in err and "pos_embed" in err and "--img-size" in err
    err = usage_error(argv[:-1] + ["vit_tiny_patch16_22"], capsys)
    assert "did you mean vit_tiny_patch16_224" in err


def test_pretrained_name_without_network_fails_fast(monkeypatch, capsys):
    import captum_vit.benchmark._models as models

    monkeypatch.setattr(models, "_cached_pretrained_file", lambda name: None)
    monkeypatch.setattr(models, "_reachable", lambda host, *a, **k: False)
    t0 = time.monotonic()
    err = usage_error(["explain", "--model", "vit_tiny_patch16_224"], capsys)
    assert time.monotonic() - t0 < 10
    assert "huggingface.co is unreachable" in err
    assert "--model FILE.pth" in err and "--model-name vit_tiny_patch16_224" in err
    # HF_HUB_OFFLINE: no network probe at all
    monkeypatch.setattr(models, "_reachable", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = usage_error(["explain", "--model", "vit_tiny_patch16_224"], capsys)
    assert "HF_HUB_OFFLINE is set" in err
    err = usage_error(["explain", "--model", "not_a_timm_model"], capsys)
    assert "neither a file, an embedded model nor a timm model name" in err


def test_network_probe_gives_up_within_its_timeout():
    from captum_vit.benchmark._models import _reachable

    t0 = time.monotonic()
    assert not _reachable("192.0.2.1", 9, timeout=0.5)  # TEST-NET: never answers
    assert time.monotonic() - t0 < 2.0


def test_cached_pretrained_weights_are_found_offline(tmp_path):
    from timm.models import get_pretrained_cfg

    from captum_vit.benchmark._models import _cached_pretrained_file

    name = "vit_tiny_patch16_224"
    hub_id = get_pretrained_cfg(name).hf_hub_id
    repo = tmp_path / ("models--" + hub_id.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (snap / "model.safetensors").write_bytes(b"weights")
    assert _cached_pretrained_file(name, cache_dir=str(tmp_path)) == str(
        snap / "model.safetensors"
    )
    assert _cached_pretrained_file(name, cache_dir=str(tmp_path / "none")) is None


def test_usage_errors_at_the_real_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "captum_vit", "explain", str(tmp_path / "no.jpg")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"captum-vit explain: error: no image file {tmp_path / 'no.jpg'}"
    )


def test_demo_figure_says_what_its_titles_are_and_has_a_colour_bar(
    tmp_path, monkeypatch
):
    import captum_vit.viz as viz

    figures = []
    real = viz.method_grid

    def spy(*args, **kwargs):
        fig = real(*args, **kwargs)
        figures.append((args, kwargs, fig))
        return fig

    monkeypatch.setattr(viz, "method_grid", spy)
    out = tmp_path / "o"
    assert main(["explain", "--samples", "2", "--out", str(out), *METHODS]) == 0
    (_, kwargs, fig) = figures[0]
    summary = json.loads((out / "explanations.json").read_text())
    for title, entry in zip(kwargs["titles"], summary["images"]):
        lines = title.split("\n")
        assert lines[0].startswith(f"prediction: {entry['prediction_name']} (")
        assert lines[1] == f"label: {entry['label_name']}"
    bars = [ax for ax in fig.axes if ax.get_ylabel().startswith("relevance")]
    assert len(bars) == 1
    assert (
        main(
            ["explain", "--samples", "1", "--target", "2", "--out", str(out), *METHODS]
        )
        == 0
    )
    title = figures[1][1]["titles"][0].split("\n")
    assert title[0].startswith("prediction: ") and title[1].startswith("explained: ")


def test_pictures_keep_their_aspect_ratio_in_the_figure(tmp_path, monkeypatch):
    from PIL import ImageDraw

    import captum_vit.viz as viz

    img = Image.new("RGB", (300, 200), (20, 20, 20))
    ImageDraw.Draw(img).ellipse([105, 70, 195, 130], fill=(250, 250, 250))
    path = tmp_path / "ellipse.jpg"
    img.save(path, quality=95)
    grey16 = tmp_path / "scan16.png"
    ramp = np.linspace(0, 65535, 80 * 60).reshape(60, 80).astype(np.uint16)
    Image.fromarray(ramp).save(grey16)
    seen = {}
    real = viz.method_grid

    def spy(images, attributions, *args, **kwargs):
        seen["images"], seen["boxes"] = images, kwargs["boxes"]
        seen["maps"] = attributions
        return real(images, attributions, *args, **kwargs)

    monkeypatch.setattr(viz, "method_grid", spy)
    out = tmp_path / "o"
    assert main(["explain", str(path), str(grey16), "--out", str(out), *METHODS]) == 0
    ellipse, scan = seen["images"]
    assert ellipse.shape == (200, 300, 3)  # drawn over the picture itself
    box = seen["boxes"][0]
    assert box.size == (64, 64) and (box.height, box.width) == (43, 64)
    assert float(np.asarray(scan).mean()) == pytest.approx(0.5, abs=0.02)
    assert seen["maps"]["rollout"].shape[-2:] == (64, 64)


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


def test_benchmark_arguments(capsys):
    args = build_parser().parse_args(["benchmark", "--dataset", "cifar10", "/d"])
    assert args.dataset == ["cifar10", "/d"] and args.limit is None
    err = usage_error(["benchmark", "--dataset", "imagenet", "/nowhere"], capsys)
    assert "needs --model" in err
    err = usage_error(["benchmark", "--dataset", "imagenet", "/a", "/b"], capsys)
    assert "at most one PATH" in err


def test_methods_all_and_patterns_expand_to_registered_names(
    tmp_path, capsys, monkeypatch
):
    from captum_vit.attr import list_methods
    from captum_vit.cli import _expand_methods

    assert _expand_methods(["all"]) == list_methods()
    lrp = _expand_methods(["rollout", "*lrp*", "rollout"])
    assert lrp[0] == "rollout" and lrp[1:] == list_methods("*lrp*")
    assert "transformer_lrp" in lrp and len(lrp) == len(set(lrp))
    monkeypatch.setattr(
        "captum_vit.benchmark.load_model",
        lambda *a, **k: pytest.fail("the model was loaded before the check"),
    )
    err = usage_error(["explain", "--methods", "*nothing*"], capsys)
    assert err.startswith("captum-vit explain: error: no method matches '*nothing*'")
    err = usage_error(["explain", "--cell", "0"], capsys)
    assert "--cell" in err and "must be positive" in err


def test_explain_draws_signed_methods_on_their_own_colour_bar(tmp_path, monkeypatch):
    import captum_vit.viz as viz

    seen = {}
    real = viz.method_grid

    def spy(*args, **kwargs):
        seen["fig"], seen["signed"] = real(*args, **kwargs), kwargs["signed"]
        return seen["fig"]

    monkeypatch.setattr(viz, "method_grid", spy)
    out = tmp_path / "o"
    argv = ["explain", "--samples", "1", "--methods", "rollout,lrp", "--out", str(out)]
    assert main(argv + ["--cell", "1.5"]) == 0
    summary = json.loads((out / "explanations.json").read_text())
    assert summary["signed"] == seen["signed"] == ["lrp"]
    labels = [ax.get_ylabel() for ax in seen["fig"].axes]
    assert sum(lb.startswith("relevance") for lb in labels) == 1
    assert sum(lb.startswith("signed relevance") for lb in labels) == 1
    assert seen["fig"].get_size_inches()[1] == pytest.approx(1.5 + 0.1)
    # the maps in numbers: the patch grid of each map over its largest |value|
    maps = summary["images"][0]["patch_maps"]
    assert np.asarray(maps["rollout"]).shape == (8, 8)
    assert np.abs(maps["lrp"]).max() == 1.0 and np.min(maps["lrp"]) < 0
    assert np.min(maps["rollout"]) >= 0


# ------------------------------------------------- vision-language (issue 14)
def test_explain_prompts_with_the_embedded_clip(tmp_path, capsys):
    """``explain --model synthetic_clip --text A --text B``: one grid row per
    image and prompt, one column per method; the JSON holds the model's
    logit and probability of each prompt and the similarity scores."""
    import captum_vit as cv
    from captum_vit import zoo
    from captum_vit.data import SyntheticScenes

    out = tmp_path / "clip"
    argv = ["explain", "--model", "synthetic_clip", "--text", "a red disk"]
    argv += ["--text", "a blue square", "--samples", "2", "--out", str(out)]
    assert main(argv + ["--methods", "legrad,rollout"]) == 0
    printed = capsys.readouterr().out
    assert "2 methods x 2 images x 2 prompts" in printed
    summary = json.loads((out / "explanations.json").read_text())
    assert summary["prompts"] == ["a red disk", "a blue square"]
    assert len(summary["rows"]) == 4
    clip, transform, tokenizer, _ = zoo.load("synthetic_clip")
    sim = cv.text_similarity(clip, summary["prompts"], tokenizer)
    scene = SyntheticScenes(2, seed=0)[1]
    with torch.no_grad():
        logits = sim(transform(scene.image[None]))[0]
    for p, row in enumerate(summary["rows"][2:]):
        assert row["prompt"] == summary["prompts"][p]
        assert abs(row["logit"] - float(logits[p])) < 1e-4
        assert set(row["scores"]) == {"legrad", "rollout"}
        assert set(row["scores"]["legrad"]) == {"sim_deletion_auc", "sim_insertion_auc"}
    assert scene.caption in summary["rows"][2]["source"]
    from PIL import Image as PILImage

    w, h = PILImage.open(out / "explanations.png").size
    assert h > w / 3  # four rows of three cells


def test_prompt_errors(capsys, tmp_path):
    out = str(tmp_path)
    assert "image classifier without a text tower" in usage_error(
        ["explain", "--text", "a red disk", "--out", out], capsys
    )
    assert "give --text PROMPT" in usage_error(
        ["explain", "--model", "synthetic_clip", "--out", out], capsys
    )
    assert "with --text every prompt is explained" in usage_error(
        ["explain", "--model", "synthetic_clip", "--text", "a", "--target", "1"],
        capsys,
    )
    assert "non-empty prompt" in usage_error(
        ["explain", "--model", "synthetic_clip", "--text", " "], capsys
    )
    assert "scores prompts, not classes" in usage_error(
        ["benchmark", "--model", "synthetic_clip", "--out", out], capsys
    )


def test_load_model_of_the_embedded_clip():
    lm = load_model("synthetic_clip")
    assert lm.tokenizer is not None and lm.classes == [] and lm.image_size == 64
    assert lm.embedded and "vision-language" in lm.source
    assert load_model().tokenizer is None
    with pytest.raises(ModelLoadError, match="without classes"):
        load_model("synthetic_clip", num_classes=3)
