r"""Make the LeGrad reference data of ``tests/attr/data/legrad/``.

Runs the public ``legrad-torch`` package (Bousselham et al. 2024, "LeGrad: an
explainability method for vision transformers via feature formation
sensitivity", https://github.com/WalBouss/LeGrad) on two tiny random-init
open_clip ``CLIP`` models and writes its maps next to this file. NOT part of
the test suite and never imported by it: run it by hand in a scratch venv that
holds the versions legrad-torch pins (it needs open_clip <= 2.23.0)::

    /work/main/.venv/bin/python -m venv --system-site-packages /tmp/clip-venv
    /tmp/clip-venv/bin/pip install legrad-torch open-clip-torch
    /tmp/clip-venv/bin/python tests/attr/data/legrad/make_legrad_reference.py

Models (built from the configs below under ``torch.manual_seed``, run in
float64):

* ``clip``: a ViT image tower with class-token pooling (LeGrad's ``"clip"``
  branch, :meth:`LeWrapper.compute_legrad_clip`);
* ``attnpool``: the same tower with open_clip's attentional pooler
  (``attentional_pool=True``, CoCa style; LeGrad's ``"coca"`` branch,
  :meth:`LeWrapper.compute_legrad_coca`).

The token embedding of each model is zeroed outside the rows of the prompts'
tokens before anything is run (so the stored rows are the whole model, see
README.md). Writes ``clip_tiny.safetensors``, ``attnpool_tiny.safetensors``
(weights), ``reference.safetensors`` (inputs and LeGrad's outputs) and
``reference.json`` (configs, prompts, versions, what was called).
"""

import importlib.metadata as md
import json
import os

import open_clip
import torch
from legrad import LeWrapper
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
PROMPTS = ["a red disk", "a blue square", "a green ring"]
IMAGES = 2
LAYER_INDICES = (-2, 0)  # LeWrapper's default, and every layer

VISION = {
    "image_size": 48,
    "patch_size": 8,
    "width": 32,
    "layers": 3,
    "head_width": 8,
    "mlp_ratio": 2.0,
}
TEXT = {
    "context_length": 8,
    "vocab_size": 49408,
    "width": 32,
    "heads": 4,
    "layers": 2,
    "mlp_ratio": 2.0,
}
CONFIGS = {
    "clip": {"embed_dim": 16, "vision_cfg": VISION, "text_cfg": TEXT},
    "attnpool": {
        "embed_dim": 16,
        "vision_cfg": {
            **VISION,
            "attentional_pool": True,
            "attn_pooler_queries": 4,
            "attn_pooler_heads": 2,
        },
        "text_cfg": TEXT,
    },
}


def build(name, tokens):
    """Seeded random-init model, float64, token rows outside ``tokens`` zero."""
    torch.manual_seed(SEED)
    cfg = CONFIGS[name]
    model = open_clip.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
    keep = torch.unique(tokens[tokens != 0])
    with torch.no_grad():
        w = model.token_embedding.weight
        rows = w[keep].clone()
        w.zero_()
        w[keep] = rows
    return model.double().eval()


def packed_state(model):
    """float32 weights (the init is float32, so ``.double()`` of them is the
    model that ran), token embedding as its non-zero rows and their ids."""
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    weight = state.pop("token_embedding.weight")
    rows = torch.nonzero(weight.abs().sum(dim=1) > 0).flatten()
    state["token_embedding.rows"] = rows
    state["token_embedding.values"] = weight[rows].contiguous()
    return state


def main():
    tokenizer = open_clip.SimpleTokenizer(context_length=TEXT["context_length"])
    tokens = tokenizer(PROMPTS)
    gen = torch.Generator().manual_seed(SEED + 1)
    size = VISION["image_size"]
    # float32 draws, run in float64: the stored float32 images are exact
    images = torch.randn(IMAGES, 3, size, size, generator=gen).double()
    out = {"images": images, "tokens": tokens}
    calls = {}
    for name in CONFIGS:
        model = build(name, tokens)
        save_file(packed_state(model), os.path.join(HERE, f"{name}_tiny.safetensors"))
        with torch.no_grad():
            text = model.encode_text(tokens, normalize=True)
            image_features = model.encode_image(images)
        out[f"{name}/text_embeddings"] = text
        out[f"{name}/image_features"] = image_features
        for layer_index in LAYER_INDICES:
            # LeWrapper patches the model's modules in place: a fresh copy each
            wrapper = LeWrapper(build(name, tokens), layer_index=layer_index)
            key = f"{name}/layer_index_{layer_index}"
            if name == "clip":
                maps = [
                    wrapper.compute_legrad(text_embedding=text, image=images[i : i + 1])
                    for i in range(IMAGES)
                ]  # each (1, P, H, W)
                out[f"{key}/maps"] = torch.cat(maps).detach()
                calls[key] = (
                    "LeWrapper(model, layer_index).compute_legrad("
                    "text_embedding=text_embeddings, image=images[i:i+1]) per image; "
                    "maps[i] = its output[0]"
                )
            else:
                per_prompt = []
                for i in range(IMAGES):
                    rows = [
                        wrapper.compute_legrad(
                            text_embedding=text[p : p + 1], image=images[i : i + 1]
                        ).detach()
                        for p in range(len(PROMPTS))
                    ]  # each (1, 1, H, W)
                    per_prompt.append(torch.cat(rows, dim=1))
                out[f"{key}/maps"] = torch.cat(per_prompt)
                out[f"{key}/maps_prompt_sum"] = torch.cat(
                    [
                        wrapper.compute_legrad(
                            text_embedding=text, image=images[i : i + 1]
                        ).detach()
                        for i in range(IMAGES)
                    ]
                )
                calls[key] = (
                    "maps[i, p] = LeWrapper(model, layer_index).compute_legrad("
                    "text_embedding=text_embeddings[p:p+1], image=images[i:i+1])[0, 0]; "
                    "maps_prompt_sum[i, 0] = the same call with all prompts at once "
                    "(the coca branch sums the similarities of all prompts)"
                )
    out = {k: v.contiguous() for k, v in out.items()}
    out["images"] = out["images"].float()  # exact, see above
    save_file(out, os.path.join(HERE, "reference.safetensors"))
    meta = {
        "seed": SEED,
        "image_seed": SEED + 1,
        "prompts": PROMPTS,
        "configs": CONFIGS,
        "dtype": "float64",
        "layer_indices": list(LAYER_INDICES),
        "calls": calls,
        "shapes": {k: list(v.shape) for k, v in out.items()},
        "versions": {
            p: md.version(p) for p in ("legrad-torch", "open-clip-torch", "torch")
        },
    }
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps(meta["shapes"], indent=2))


if __name__ == "__main__":
    main()
