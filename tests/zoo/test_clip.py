"""The embedded vision-language model ``synthetic_clip`` and its training
script."""

import json
import os

import open_clip
import pytest
import torch
import torch.nn.functional as F

import captum_vit.zoo as zoo
from captum_vit.data import (
    CLASS_NAMES,
    COLOUR_NAMES,
    SceneSample,
    SyntheticScenes,
    object_prompt,
)
from captum_vit.zoo import Normalize, ZooCLIP
from captum_vit.zoo._build import (
    build_clip,
    pack_token_embedding,
    unpack_token_embedding,
)
from captum_vit.zoo.train_clip import (
    DEFAULT_CONFIG,
    _same_objects,
    all_prompts,
    caption_vocabulary,
    contrastive_loss,
    main,
    train,
    zero_shot,
)

WEIGHTS = os.path.join(os.path.dirname(zoo.__file__), "weights")

TINY = {
    "embed_dim": 8,
    "vision_cfg": {
        "image_size": 32,
        "patch_size": 8,
        "width": 16,
        "layers": 1,
        "head_width": 8,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 20,
        "vocab_size": 49408,
        "width": 16,
        "heads": 2,
        "layers": 1,
        "mlp_ratio": 2.0,
    },
}


@pytest.fixture(scope="module")
def loaded():
    return zoo.load("synthetic_clip")


def test_listed_with_its_kind():
    assert {"synthetic_clip", "synthetic_vit"} <= set(zoo.list_models())
    assert "synthetic_clip" in zoo.list_models(kind="clip")
    assert "synthetic_clip" not in zoo.list_models(kind="classifier")
    assert "synthetic_vit" in zoo.list_models(kind="classifier")
    assert zoo.model_kind("synthetic_clip") == "clip"
    assert zoo.model_kind("synthetic_vit") == "classifier"
    with pytest.raises(ValueError):
        zoo.list_models(kind="detector")
    with pytest.raises(ValueError):
        zoo.load("synthetic_clip", dynamic_img_size=True)


def test_load_returns_open_clip_model_tokenizer_and_meta(loaded):
    assert isinstance(loaded, ZooCLIP)
    model, transform, tokenizer, meta = loaded
    assert isinstance(model, open_clip.CLIP) and not model.training
    assert isinstance(model.visual, open_clip.transformer.VisionTransformer)
    assert model.visual.pool_type == "tok" and model.visual.attn_pool is None
    assert isinstance(tokenizer, open_clip.SimpleTokenizer)
    assert isinstance(transform, Normalize)
    assert meta["kind"] == "clip" and meta["config"] == DEFAULT_CONFIG
    ctx = meta["tokenizer"]["context_length"]
    assert tokenizer(["a red disk"]).shape == (1, ctx) == (1, model.context_length)
    assert meta["shapes"] == list(CLASS_NAMES)
    assert meta["colours"] == list(COLOUR_NAMES)
    assert meta["training"]["seed"] == 0
    assert meta["held_out"]["seed"] != meta["training"]["seed"]
    images = transform(SyntheticScenes(2, seed=5).tensors().image)
    with torch.no_grad():
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(
            tokenizer(["a red disk", "a blue ring"]), normalize=True
        )
    assert img.shape == txt.shape == (2, DEFAULT_CONFIG["embed_dim"])


def test_weights_small_packed_and_strict():
    from safetensors.torch import load_file

    path = os.path.join(WEIGHTS, "synthetic_clip.safetensors")
    assert os.path.getsize(path) < 2 * 2**20
    state = load_file(path)
    assert "token_embedding.weight" not in state
    with open(os.path.join(WEIGHTS, "synthetic_clip.json")) as f:
        meta = json.load(f)
    vocab = caption_vocabulary(open_clip.SimpleTokenizer(context_length=20))
    assert torch.equal(state["token_embedding.rows"], vocab)
    model = build_clip(meta["config"])
    full = unpack_token_embedding(state, meta["config"]["text_cfg"]["vocab_size"])
    result = model.load_state_dict(full, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_zero_shot_accuracy_matches_metadata(loaded):
    # the first 300 of the script's held-out scenes: within 0.06 of the
    # accuracies it recorded on all of them (about 3 standard errors)
    model, _, tokenizer, meta = loaded
    held = meta["held_out"]
    got = zero_shot(model, tokenizer, n=300, seed=held["seed"])
    assert held["n"] >= 300 and got["objects"] > 500
    for key in ("shape_accuracy", "colour_accuracy", "object_recall"):
        assert got[key] == pytest.approx(held[key], abs=0.06)
        assert got[key] > 2 * got["chance"][key]  # clearly above chance
    single, held_single = got["single_object"], held["single_object"]
    for key in ("object_accuracy", "colour_only_accuracy"):
        assert single[key] == pytest.approx(held_single[key], abs=0.1)
        assert single[key] > 4 * got["chance"]["single_object"][key]


def test_zero_shot_on_fresh_scenes_by_prompt(loaded):
    model, transform, tokenizer, _ = loaded
    scenes = SyntheticScenes(64, seed=2024, objects=1).tensors()
    prompts = all_prompts()
    with torch.no_grad():
        img = model.encode_image(transform(scenes.image), normalize=True)
        txt = model.encode_text(tokenizer(prompts), normalize=True)
    best = (img @ txt.T).argmax(-1)
    truth = scenes.shapes[:, 0] * len(COLOUR_NAMES) + scenes.colours[:, 0]
    assert prompts[int(truth[0])] == object_prompt(
        int(scenes.shapes[0, 0]), int(scenes.colours[0, 0])
    )
    assert (best == truth).float().mean() > 0.3  # chance: 1/64


def test_pack_unpack_token_embedding_roundtrip():
    torch.manual_seed(0)
    weight = torch.zeros(10, 3)
    weight[[1, 4, 7]] = torch.randn(3, 3)
    state = {"token_embedding.weight": weight, "x": torch.ones(2)}
    packed = pack_token_embedding(state)
    assert packed["token_embedding.rows"].tolist() == [1, 4, 7]
    assert set(packed) == {"x", "token_embedding.rows", "token_embedding.values"}
    back = unpack_token_embedding(packed, 10)
    assert torch.equal(back["token_embedding.weight"], weight)
    assert torch.equal(back["x"], state["x"])


def test_same_objects_ignores_order_and_padding():
    shapes = torch.tensor([[0, 3, -1], [3, 0, -1], [0, -1, -1], [0, 3, 5]])
    colours = torch.tensor([[1, 2, -1], [2, 1, -1], [1, -1, -1], [1, 2, 4]])
    same = _same_objects(shapes, colours)
    assert same.tolist() == [
        [True, True, False, False],
        [True, True, False, False],
        [False, False, True, False],
        [False, False, False, True],
    ]


def test_contrastive_loss_against_naive_formula():
    torch.manual_seed(0)
    model = build_clip(TINY).double()
    tokenizer = open_clip.SimpleTokenizer(context_length=20)
    data = SyntheticScenes(4, seed=0, image_size=32)
    samples = [data[i] for i in range(4)]
    samples[3] = samples[0]._replace(image=samples[3].image)  # same objects as 0
    batch = SceneSample(
        torch.stack([s.image for s in samples]).double(),
        tuple(s.caption for s in samples),
        torch.stack([s.shapes for s in samples]),
        torch.stack([s.colours for s in samples]),
        torch.stack([s.masks for s in samples]),
        torch.stack([s.boxes for s in samples]),
    )
    got = contrastive_loss(model, batch, tokenizer)
    # naive: per row, cross-entropy against the uniform distribution over
    # the scenes with the same objects (here 0 and 3), both directions
    with torch.no_grad():
        x = model.encode_image((batch.image - 0.5) / 0.25)
        t = model.encode_text(tokenizer(list(batch.caption)))
    x, t = x / x.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
    s = model.logit_scale.exp().item()
    pos = [[0, 3], [1], [2], [0, 3]]
    total = 0.0
    for i in range(4):
        for logits in (s * x[i] @ t.T, s * t[i] @ x.T):
            logp = logits - torch.logsumexp(logits, 0)
            total += -sum(logp[j] for j in pos[i]) / len(pos[i])
    assert got.item() == pytest.approx(total.item() / 8, rel=1e-10)


def test_build_zeroes_unused_token_rows_and_training_keeps_them_zero():
    kwargs = dict(steps=2, batch_size=4, workers=0, log_every=0, config=TINY)
    model = train(seed=3, **kwargs)
    vocab = caption_vocabulary(open_clip.SimpleTokenizer(context_length=20))
    used = torch.zeros(TINY["text_cfg"]["vocab_size"], dtype=torch.bool)
    used[vocab] = True
    weight = model.token_embedding.weight
    assert (weight[~used] == 0).all() and (weight[used] != 0).any(-1).all()
    # the vocabulary: every word of every caption, start and end of text
    tokenizer = open_clip.SimpleTokenizer(context_length=20)
    words = tokenizer(["an orange ring and a cyan frame and a purple cross"])
    assert set(words[words != 0].tolist()) <= set(vocab.tolist())


def test_training_is_reproducible_from_seed():
    kwargs = dict(steps=[2, 1], batch_size=4, workers=0, log_every=0, config=TINY)
    a = train(seed=3, **kwargs).state_dict()
    b = train(seed=3, **kwargs).state_dict()
    c = train(seed=4, **kwargs).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    torch.manual_seed(3)
    init = build_clip(TINY).state_dict()
    assert not torch.equal(a["visual.conv1.weight"], init["visual.conv1.weight"])


def test_script_writes_loadable_weights_and_metadata(tmp_path):
    argv = ["--steps", "2", "--batch-size", "4", "--workers", "0", "--eval-n", "6"]
    meta = main(argv + ["--out", str(tmp_path / "a")])
    main(argv + ["--out", str(tmp_path / "b")])
    files = [tmp_path / d / "synthetic_clip.safetensors" for d in "ab"]
    assert files[0].read_bytes() == files[1].read_bytes()  # same seed, same bytes
    with open(tmp_path / "a" / "synthetic_clip.json") as f:
        assert json.load(f) == json.loads(json.dumps(meta))
    assert meta["kind"] == "clip" and meta["training"]["steps"] == [2]
    assert meta["held_out"]["n"] == 6 and meta["held_out"]["seed"] == 1
    from safetensors.torch import load_file

    model = build_clip(meta["config"])
    state = unpack_token_embedding(load_file(str(files[0])), 49408)
    model.load_state_dict(state, strict=True)
    tokenizer = open_clip.SimpleTokenizer(context_length=20)
    again = zero_shot(model.eval(), tokenizer, n=6, seed=1)
    assert again["shape_accuracy"] == pytest.approx(
        meta["held_out"]["shape_accuracy"], abs=1e-4
    )


def test_logit_scale_is_clamped_in_the_loss():
    torch.manual_seed(0)
    model = build_clip(TINY)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # e^10 >> 100
    batch = next(
        iter(torch.utils.data.DataLoader(SyntheticScenes(2, image_size=32), 2))
    )
    tokenizer = open_clip.SimpleTokenizer(context_length=20)
    x = F.normalize(model.encode_image((batch.image - 0.5) / 0.25), dim=-1)
    t = F.normalize(model.encode_text(tokenizer(list(batch.caption))), dim=-1)
    logits = 100.0 * x @ t.T
    target = torch.arange(2)
    expected = 0.5 * (
        F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
    )
    got = contrastive_loss(model, batch, tokenizer)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
