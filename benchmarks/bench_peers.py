"""Benchmark: captum_vit against the code users would otherwise pick, same
weights, same images, one run.

Model: a random-init timm ``vit_small_patch16_224`` (ViT-S/16 shape), batch 8,
float32, CPU, ``--threads`` threads (2 by default). Pairs (ours | peer):

* ``AttnLRP`` | LXT 2.1's AttnLRP (``pip install lxt``): LXT's own patch
  functions (``layer_norm_forward``, ``non_linear_forward`` on the GELU,
  ``wrap_attention_forward``: gradients at q, k, v divided by 4, 4, 2) on a
  Hugging Face ``ViTForImageClassification`` carrying the same weights,
  parameters frozen and ``x * x.grad`` after one backward, as in LXT's
  examples. LXT patches classes process-wide (``torch.nn.LayerNorm``), so
  the patches are applied around each LXT call only and undone after it.
  LXT 2.1's ``lxt.efficient`` package cannot be imported with
  ``transformers`` 5 (its BERT module imports a removed file); its
  ``rules`` and ``patches`` modules are then loaded without it.
* ``TransformerLRP`` | Chefer et al.'s ``LRP.generate_LRP`` on their
  ``ViT_LRP`` model; ``AttentionRollout`` | their ``Baselines.generate_rollout``
  on ``ViT_new`` (``--chefer`` = a checkout of
  github.com/hila-chefer/Transformer-Explainability; their code explains one
  image per call, so the batch is a loop; ``Tensor.cuda`` is made the
  identity during their calls, as the reference data's README describes).
* ``AttentionRollout`` | vit-explain's ``VITAttentionRollout`` (``--vit-explain``
  = a checkout of github.com/jacobgil/vit-explain; mean head fusion, discard
  ratio 0, one image per call, timm's unfused attention as it needs).
* ``ViTGradCam`` | pytorch-grad-cam's ``GradCAM`` (``pip install grad-cam``) on
  ``blocks[-1].norm1`` with its ViT ``reshape_transform``.

The peers are not dependencies: put them on ``PYTHONPATH`` (e.g. a ``pip
install --target`` folder) and pass the checkouts; whatever is missing is
skipped and named. Every workload is timed in turn (``--repeats`` rounds
after one warm-up each, medians); peak memory per workload in a fresh
subprocess (``_timing.peak_extra_mib``). The maps of each pair are compared
(Pearson correlation per image, the minimum over the batch is printed).

Run: ``PYTHONPATH=/tmp/peers python benchmarks/bench_peers.py --chefer
/tmp/Transformer-Explainability --vit-explain /tmp/vit-explain``
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import platform
import subprocess
import sys
import types
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from _timing import (  # benchmarks/_timing.py
    baseline_fns,
    fresh_process_env,
    interleaved,
    peak_extra_mib,
)

ROOT = Path(__file__).resolve().parents[1]
Workload = Callable[[], object]


def build(batch: int):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 224, 224, generator=g)
    target = torch.arange(batch) % model.num_classes
    return model, x, target


# -------------------------------------------------------------------- ours
def ours(model, x, target) -> Dict[str, Workload]:
    import captum_vit as cv

    methods = {
        "captum_vit AttnLRP": (cv.AttnLRP(model), "input"),
        "captum_vit TransformerLRP": (cv.TransformerLRP(model), "tokens"),
        "captum_vit AttentionRollout": (cv.AttentionRollout(model), "tokens"),
        "captum_vit ViTGradCam": (cv.ViTGradCam(model), "input"),
    }
    fns: Dict[str, Workload] = {
        "forward+backward": baseline_fns(model, x, target)["forward_backward"]
    }
    for name, (m, out) in methods.items():
        fns[name] = lambda m=m, out=out: m.attribute(x, target=target, output=out)
    return fns


# --------------------------------------------------------------------- LXT
def _import_lxt() -> Optional[Tuple[types.ModuleType, types.ModuleType]]:
    """LXT's ``efficient.rules`` and ``efficient.patches`` modules, or None."""
    try:
        from lxt.efficient import patches, rules  # noqa: F401

        return rules, patches
    except ImportError as err:
        spec = importlib.util.find_spec("lxt")
        if spec is None or spec.submodule_search_locations is None:
            return None
        print(f"note: `import lxt.efficient` failed ({err}); loading its rules")
    pkg_dir = Path(list(spec.submodule_search_locations)[0]) / "efficient"
    stub = types.ModuleType("lxt.efficient")
    stub.__path__ = [str(pkg_dir)]
    sys.modules["lxt.efficient"] = stub
    loaded = []
    for name in ("rules", "patches"):
        s = importlib.util.spec_from_file_location(
            f"lxt.efficient.{name}", pkg_dir / f"{name}.py"
        )
        mod = importlib.util.module_from_spec(s)
        sys.modules[s.name] = mod
        s.loader.exec_module(mod)
        loaded.append(mod)
    return loaded[0], loaded[1]


@contextlib.contextmanager
def _class_attrs(changes: List[Tuple[object, str, object]]) -> Iterator[None]:
    saved = [(obj, name, obj.__dict__.get(name)) for obj, name, _ in changes]
    try:
        for obj, name, value in changes:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, old in reversed(saved):
            if old is None:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


def lxt(model, x, target) -> Dict[str, Workload]:
    found = _import_lxt()
    if found is None:
        print("skip LXT: `lxt` is not importable")
        return {}
    _, patches = found
    from transformers.activations import GELUActivation
    from transformers.models.vit import modeling_vit

    sys.path.insert(0, str(ROOT))
    from tests.models import hf_vit_from_timm

    hf = hf_vit_from_timm(model, "sdpa")
    for p in hf.parameters():  # frozen, as in LXT's examples
        p.requires_grad_(False)
    inner = modeling_vit.ALL_ATTENTION_FUNCTIONS

    class _Wrapped:  # LXT's patch_attention for transformers 5's interface
        def get_interface(self, name, default):
            return patches.wrap_attention_forward(inner.get_interface(name, default))

    changes = [
        (torch.nn.LayerNorm, "forward", patches.layer_norm_forward),
        (GELUActivation, "original_forward", GELUActivation.forward),
        (GELUActivation, "forward", patches.non_linear_forward),
        (modeling_vit, "ALL_ATTENTION_FUNCTIONS", _Wrapped()),
    ]
    rows = torch.arange(x.shape[0])

    def attn_lrp():
        with _class_attrs(changes):
            xx = x.detach().requires_grad_(True)
            logits = hf(xx).logits
            logits[rows, target].sum().backward()
            return xx.detach() * xx.grad

    return {"LXT AttnLRP": attn_lrp}


# ------------------------------------------------------------------ Chefer
@contextlib.contextmanager
def _no_cuda() -> Iterator[None]:
    with _class_attrs([(torch.Tensor, "cuda", lambda self, *a, **k: self)]):
        yield


def chefer(model, x, target, path: Optional[str]) -> Dict[str, Workload]:
    if not path:
        print("skip Chefer et al.: no --chefer checkout given")
        return {}
    sys.path.insert(0, path)
    try:
        from baselines.ViT.ViT_explanation_generator import LRP, Baselines
        from baselines.ViT.ViT_LRP import VisionTransformer as ViTLRP
        from baselines.ViT.ViT_new import VisionTransformer as ViTNew
    except ImportError as err:
        print(f"skip Chefer et al.: {err}")
        return {}
    from functools import partial

    kw = dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4, qkv_bias=True)
    lrp_model = ViTLRP(**kw).eval()
    lrp_model.norm.eps = 1e-6  # their final norm uses 1e-5 (see the README)
    lrp_model.load_state_dict(model.state_dict(), strict=True)
    new_model = ViTNew(norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **kw)
    new_model.load_state_dict(model.state_dict(), strict=True)
    lrp, baselines = LRP(lrp_model), Baselines(new_model.eval())

    def transformer_lrp():
        with _no_cuda():
            return torch.cat(
                [
                    lrp.generate_LRP(x[i : i + 1], index=int(target[i]), start_layer=0)
                    for i in range(x.shape[0])
                ]
            ).detach()

    def rollout():
        with _no_cuda():
            return torch.cat(
                [baselines.generate_rollout(x[i : i + 1]) for i in range(x.shape[0])]
            ).detach()

    return {"Chefer TransformerLRP": transformer_lrp, "Chefer rollout": rollout}


# -------------------------------------------------------------- vit-explain
def vit_explain(model, x, path: Optional[str]) -> Dict[str, Workload]:
    if not path:
        print("skip vit-explain: no --vit-explain checkout given")
        return {}
    sys.path.insert(0, path)
    try:
        from vit_rollout import VITAttentionRollout
    except ImportError as err:
        print(f"skip vit-explain: {err}")
        return {}
    unfused = copy.deepcopy(model)
    for blk in unfused.blocks:  # its hooks read attn_drop's output
        blk.attn.fused_attn = False
    rollout = VITAttentionRollout(unfused, head_fusion="mean", discard_ratio=0.0)

    def run():
        return np.stack([rollout(x[i : i + 1]) for i in range(x.shape[0])])

    return {"vit-explain rollout": run}


# -------------------------------------------------------- pytorch-grad-cam
def grad_cam(model, x, target) -> Dict[str, Workload]:
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        print(f"skip pytorch-grad-cam: {err}")
        return {}
    hooked = copy.deepcopy(model)  # it keeps hooks on the model it is given
    gh, gw = hooked.patch_embed.grid_size

    def reshape_transform(t):  # their ViT example (prefix: the class token)
        t = t[:, 1:, :].reshape(t.size(0), gh, gw, t.size(2))
        return t.transpose(2, 3).transpose(1, 2)

    cam = GradCAM(
        model=hooked,
        target_layers=[hooked.blocks[-1].norm1],
        reshape_transform=reshape_transform,
    )
    targets = [ClassifierOutputTarget(int(t)) for t in target]

    def run():
        return cam(input_tensor=x, targets=targets)

    return {"pytorch-grad-cam GradCAM": run}


# ------------------------------------------------------------------ driver
PAIRS = [
    ("captum_vit AttnLRP", "LXT AttnLRP"),
    ("captum_vit TransformerLRP", "Chefer TransformerLRP"),
    ("captum_vit AttentionRollout", "Chefer rollout"),
    ("captum_vit AttentionRollout", "vit-explain rollout"),
    ("captum_vit ViTGradCam", "pytorch-grad-cam GradCAM"),
]


def all_workloads(args) -> Dict[str, Workload]:
    torch.set_num_threads(args.threads)
    model, x, target = build(args.batch)
    fns = ours(model, x, target)
    peers = {
        "lxt": lambda: lxt(model, x, target),
        "chefer": lambda: chefer(model, x, target, args.chefer),
        "vit-explain": lambda: vit_explain(model, x, args.vit_explain),
        "grad-cam": lambda: grad_cam(model, x, target),
    }
    for name in args.peers:
        fns.update(peers[name]())
    if args.memory:
        return fns
    used = {a for a, b in PAIRS if b in fns} | {"forward+backward"}
    return {k: v for k, v in fns.items() if k in used or not k.startswith("captum")}


def _as_maps(out, batch: int) -> Optional[np.ndarray]:
    if out is None:
        return None
    if isinstance(out, torch.Tensor):
        out = out.detach().float().numpy()
    out = np.asarray(out, dtype=np.float64)
    if out.ndim == 4:  # pixel relevance (B, C, H, W): the channel sum
        out = out.sum(1)
    return out.reshape(batch, -1)


def _agreement(a: np.ndarray, b: np.ndarray) -> str:
    """Minimum Pearson correlation over the batch (both maps' scales are
    arbitrary for rollout and Grad-CAM) and max |a - b| / max |a|."""
    corr = min(np.corrcoef(u, v)[0, 1] for u, v in zip(a, b))
    diff = np.abs(a - b).max() / np.abs(a).max()
    return f"min correlation {corr:.6f}, max|diff|/max {diff:.1e}"


def _machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            name = next(ln.split(":", 1)[1].strip() for ln in f if "model name" in ln)
    except (OSError, StopIteration):
        name = platform.machine()
    return f"{name}, {os.cpu_count()} CPUs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--chefer", help="checkout of hila-chefer/Transformer-Explainability"
    )
    p.add_argument("--vit-explain", help="checkout of jacobgil/vit-explain")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--peers",
        nargs="+",
        default=["lxt", "chefer", "vit-explain", "grad-cam"],
        choices=["lxt", "chefer", "vit-explain", "grad-cam"],
    )
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory", help=argparse.SUPPRESS)
    args = p.parse_args()
    fns = all_workloads(args)
    if args.memory:
        print(json.dumps({"peak_extra_mib": peak_extra_mib(fns[args.memory])}))
        return
    maps = {name: _as_maps(fn(), args.batch) for name, fn in fns.items()}
    med = interleaved(fns, args.repeats)
    mem: Dict[str, float] = {}
    if not args.no_memory:
        passed = ["--batch", str(args.batch), "--threads", str(args.threads)]
        passed += ["--peers", *args.peers]
        for flag, value in (
            ("--chefer", args.chefer),
            ("--vit-explain", args.vit_explain),
        ):
            passed += [flag, value] if value else []
        for name in fns:
            out = subprocess.run(
                [sys.executable, __file__, "--memory", name] + passed,
                capture_output=True,
                text=True,
                check=True,
                env=fresh_process_env(),
            )
            last = out.stdout.strip().splitlines()[-1]
            mem[name] = json.loads(last)["peak_extra_mib"]
    print(
        f"{_machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, vit_small_patch16_224 (random init), batch "
        f"{args.batch}, {args.repeats} interleaved repeats, medians"
    )
    print(f"{'workload':>28}  {'s/image':>8}  {'peak MiB':>8}")
    for name in fns:
        peak = f"{mem[name]:8.0f}" if name in mem else "       -"
        print(f"{name:>28}  {med[name] / args.batch:8.3f}  {peak}")
    print("peer / captum_vit (time; peak memory), map agreement:")
    for a, b in PAIRS:
        if a in med and b in med:
            mem_ratio = f"{mem[b] / mem[a]:.2f}x" if mem else "-"
            print(
                f"  {b} / {a}: {med[b] / med[a]:.2f}x; {mem_ratio}; "
                f"{_agreement(maps[a], maps[b])}"
            )


if __name__ == "__main__":
    main()
