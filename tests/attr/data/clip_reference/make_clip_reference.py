r"""Make the CLIP reference data of ``tests/attr/data/clip_reference/``.

Runs the authors' code of two CLIP explanation methods on tiny random-init
OpenAI-CLIP models and writes their outputs next to this file:

* **Chefer et al.'s CLIP protocol** (GenericAttention on the image-text
  score): the ``interpret`` function of their notebook
  ``CLIP_explainability.ipynb``, on their modified copy of OpenAI CLIP
  (``CLIP/clip/model.py``, which records the attention probabilities), both
  from github.com/hila-chefer/Transformer-MM-Explainability;
* **Grad-ECLIP** (Zhao et al., ICML 2024): the functions ``attention_layer``,
  ``clip_encode_dense``, ``sim_qk`` and ``grad_eclip`` of the notebook
  ``grad_eclip_image.ipynb`` of github.com/Cyang-Zhao/Grad-Eclip, on the same
  CLIP code (their notebook loads OpenAI CLIP, whose modules carry the same
  names).

NOT part of the test suite and never imported by it. The authors' code is
read from a checkout of each repository, executed here, never copied::

    git clone https://github.com/hila-chefer/Transformer-MM-Explainability /tmp/mm
    git clone https://github.com/Cyang-Zhao/Grad-Eclip /tmp/ge
    PYTHONPATH=$PWD /work/main/.venv/bin/python \
        tests/attr/data/clip_reference/make_clip_reference.py /tmp/mm /tmp/ge

The notebooks' cells are executed as they are except for device and dtype
plumbing, changed in the source text before it runs: ``interpret``'s
``one_hot.cuda()`` becomes ``one_hot`` (CPU) and ``clip_encode_dense``'s
``x.half()`` becomes ``x.float()`` (the models run in float32: their
LayerNorm computes in float32 whatever the model's dtype);
``clip_encode_dense`` also prints shapes. See README.md for the models, the
calls and what is stored.
"""

import json
import os
import sys

import nbformat
import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
PROMPTS = ["a red disk", "a blue square", "a green ring"]
CONTEXT = 8
IMAGES = 2
# OpenAI CLIP's constructor gives its VisualTransformer vision_width // 64
# heads; "vision_heads" (when given) rebuilds the tower with the class's own
# ``heads`` argument
MODELS = {
    # Chefer's protocol: two heads per layer (the head mean matters)
    "chefer": dict(
        embed_dim=16,
        image_resolution=32,
        vision_layers=2,
        vision_width=64,
        vision_heads=2,
        vision_patch_size=8,
        context_length=CONTEXT,
        vocab_size=49408,
        transformer_width=32,
        transformer_heads=2,
        transformer_layers=2,
    ),
    # Grad-ECLIP: one head (their code recomputes the last attention as one
    # head, which is the model's own function only for a one-head layer)
    "grad_eclip": dict(
        embed_dim=16,
        image_resolution=32,
        vision_layers=2,
        vision_width=64,
        vision_patch_size=8,
        context_length=CONTEXT,
        vocab_size=49408,
        transformer_width=32,
        transformer_heads=2,
        transformer_layers=2,
    ),
}
# start_layer values of Chefer's interpret: -1 (their notebook's default, the
# last layer) and 0 (every layer)
START_LAYERS = (-1, 0)


def cells(path):
    """The code cells of a notebook, by their first line."""
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def cell_defining(sources, name):
    for src in sources:
        if f"def {name}(" in src:
            return src
    raise KeyError(name)


def cell_defining_param(sources):
    for src in sources:
        if src.lstrip().startswith("#@title Control context expansion"):
            return src
    raise KeyError("start_layer")


def build(clip_module, name, tokens):
    """Seeded tiny CLIP of Chefer's copy, attention sharpened, token rows
    outside ``tokens`` zeroed, eval (float32: their LayerNorm computes in
    float32 whatever the model's dtype)."""
    torch.manual_seed(SEED)
    cfg = dict(MODELS[name])
    heads = cfg.pop("vision_heads", None)
    model = clip_module.model.CLIP(**cfg)
    if heads is not None:
        model.visual = clip_module.model.VisualTransformer(
            input_resolution=cfg["image_resolution"],
            patch_size=cfg["vision_patch_size"],
            width=cfg["vision_width"],
            layers=cfg["vision_layers"],
            heads=heads,
            output_dim=cfg["embed_dim"],
        )
    with torch.no_grad():
        for blk in model.visual.transformer.resblocks:
            blk.attn.in_proj_weight.mul_(4.0)  # non-uniform attention
        keep = torch.unique(tokens[tokens != 0])
        w = model.token_embedding.weight
        rows = w[keep].clone()
        w.zero_()
        w[keep] = rows
    return model.eval()


def packed_state(model):
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    weight = state.pop("token_embedding.weight")
    rows = torch.nonzero(weight.abs().sum(dim=1) > 0).flatten()
    state["token_embedding.rows"] = rows
    state["token_embedding.values"] = weight[rows].contiguous()
    return state


def main(mm_repo, ge_repo):
    sys.path.insert(0, mm_repo)
    import CLIP.clip as clip_module  # Chefer et al.'s modified OpenAI CLIP

    tokens = clip_module.tokenize(PROMPTS, context_length=CONTEXT)
    gen = torch.Generator().manual_seed(SEED + 1)
    images = torch.randn(IMAGES, 3, 32, 32, generator=gen)
    out = {"images": images, "tokens": tokens}

    # ---- Chefer et al.: interpret() of CLIP_explainability.ipynb
    mm_cells = cells(os.path.join(mm_repo, "CLIP_explainability.ipynb"))
    src = cell_defining(mm_cells, "interpret").replace("one_hot.cuda()", "one_hot")
    env = {"torch": torch, "np": np}
    # the notebook's parameter cell (start_layer = start_layer_text = -1)
    exec(compile(cell_defining_param(mm_cells), "params", "exec"), env)
    exec(compile(src, "CLIP_explainability.ipynb:interpret", "exec"), env)
    model = build(clip_module, "chefer", tokens)
    save_file(packed_state(model), os.path.join(HERE, "chefer_tiny.safetensors"))
    for start in START_LAYERS:
        maps = []
        for i in range(IMAGES):
            # one call per image: the image repeated once per prompt, the
            # relevance of copy p for prompt p
            _, R_image = env["interpret"](
                images[i : i + 1], tokens, model, "cpu", start_layer=start,
                start_layer_text=-1,
            )
            maps.append(R_image.detach())
        out[f"chefer/start_layer_{start}"] = torch.stack(maps)  # (I, P, 16)
    logits, _ = model(images, tokens)  # (their attention hooks need grad)
    out["chefer/logits_per_image"] = logits.detach()

    # ---- Grad-ECLIP: grad_eclip_image.ipynb
    ge_cells = cells(os.path.join(ge_repo, "grad_eclip_image.ipynb"))
    model = build(clip_module, "grad_eclip", tokens)
    save_file(packed_state(model), os.path.join(HERE, "grad_eclip_tiny.safetensors"))
    env = {"torch": torch, "F": torch.nn.functional, "math": __import__("math")}
    env["clipmodel"] = model
    env["clip_inres"] = model.visual.input_resolution
    env["clip_ksize"] = model.visual.conv1.kernel_size
    for name in ("attention_layer", "sim_qk"):
        exec(compile(cell_defining(ge_cells, name), name, "exec"), env)
    dense = cell_defining(ge_cells, "clip_encode_dense").replace(
        "x = x.half()", "x = x.float()"
    )
    exec(compile(dense, "clip_encode_dense", "exec"), env)
    text = model.encode_text(tokens).detach()  # (their attention hooks need grad)
    text = text / text.norm(dim=-1, keepdim=True)
    eclip = []
    for i in range(IMAGES):
        outputs, _, vs, qs, ks, _, atten_outs, map_size = env["clip_encode_dense"](
            images[i : i + 1], n=1
        )
        img = outputs[:, 0] / outputs[:, 0].norm(dim=-1, keepdim=True)
        cosine = (img @ text.T)[0]
        eclip.append(
            torch.stack(
                [
                    env["grad_eclip"](c, qs, ks, vs, atten_outs, map_size).detach()
                    for c in cosine
                ]
            )
        )
        out[f"grad_eclip/cosine_{i}"] = cosine.detach()
    out["grad_eclip/maps"] = torch.stack(eclip)  # (I, P, 4, 4)

    save_file(
        {k: v.contiguous() for k, v in out.items()},
        os.path.join(HERE, "reference.safetensors"),
    )
    meta = {
        "seed": SEED,
        "image_seed": SEED + 1,
        "prompts": PROMPTS,
        "context_length": CONTEXT,
        "models": MODELS,
        "sharpening": "visual in_proj_weight * 4",
        "dtype": "float32",
        "start_layers": list(START_LAYERS),
        "shapes": {k: list(v.shape) for k, v in out.items()},
        "versions": {"torch": torch.__version__},
    }
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps(meta["shapes"], indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:3])
