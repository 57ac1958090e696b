"""The ``captum-vit`` command line.

``captum-vit explain`` explains images (default: the embedded model on bundled
synthetic samples) with several methods and writes a PNG grid of overlays
(image, then one column per method) and a JSON of the scores; with
``--model synthetic_clip --text PROMPT --text PROMPT ...`` it explains the
image-text similarity of a vision-language model, one row per image and prompt.
``captum-vit benchmark`` runs methods x metrics over a dataset, single process
or under ``torchrun``, and writes the table (Markdown, CSV) and bar charts.
``captum-vit insights`` serves the web visualiser.

A mistake in the arguments or the files (a missing or unreadable image, an
unknown method, a class out of range, a checkpoint that does not fit) ends the
command with one line ``captum-vit CMD: error: ...`` on stderr and exit status
2, checked before the model loads wherever it can be.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .benchmark import LoadedModel

#: Longer side of the copy of a picture kept for the figure.
_DISPLAY_SIDE = 1024


class UsageError(Exception):
    """A mistake of the user's: reported as one line, exit status 2."""


def _split(values: Optional[Sequence[str]]) -> Optional[List[str]]:
    """``["a, b", "c"]`` -> ``["a", "b", "c"]``; None stays None."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer, got {text!r}"
            ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


_positive_float.__name__ = "positive number"


def _check_methods(names: Optional[List[str]]) -> None:
    """Unknown method names, before the model loads."""
    from .attr import list_methods

    known = list_methods()
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise UsageError(
            f"unknown method(s) {', '.join(unknown)}; available: {', '.join(known)}"
        )


def _expand_methods(
    names: Optional[List[str]], model: Optional[torch.nn.Module] = None
) -> Optional[List[str]]:
    """``all`` and fnmatch patterns (``*lrp*``) -> the registered names they
    match (that apply to ``model``, if given), in registry order; other names
    are kept as given."""
    from .attr import list_methods

    if names is None:
        return None
    out: List[str] = []
    for name in names:
        if name == "all" or any(c in name for c in "*?["):
            matched = list_methods("*" if name == "all" else name, model=model)
            if not matched:
                raise UsageError(
                    f"no method matches {name!r}; available: "
                    f"{', '.join(list_methods())}"
                )
        else:
            matched = [name]
        out += [m for m in matched if m not in out]
    return out


def _read_images(paths: Sequence[str]) -> List[Any]:
    """Every image file decoded completely (``(H, W, 3)`` arrays in [0, 1], at
    most ``_DISPLAY_SIDE`` on the longer side), before the model loads."""
    from PIL import UnidentifiedImageError

    from .viz import load_image

    out = []
    for p in paths:
        if not os.path.isfile(p):
            raise UsageError(f"no image file {p}")
        try:
            out.append(load_image(p, max_side=_DISPLAY_SIDE))
        except UnidentifiedImageError:
            raise UsageError(f"{p} is not an image file Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise UsageError(f"{p}: unreadable image ({e})") from None
    return out


def _letterboxed(
    pictures: Sequence[Any], size: int, fill: Sequence[float]
) -> Tuple[torch.Tensor, List[Any]]:
    """Pictures fitted into the model's square input, keeping their aspect
    ratio (resized, then padded with the normalisation mean)."""
    from .viz import letterbox

    inputs, boxes = zip(*(letterbox(p, size, fill) for p in pictures))
    return torch.stack(list(inputs)), list(boxes)


def _load_model(args: argparse.Namespace) -> LoadedModel:
    from .benchmark import ModelLoadError, load_model

    try:
        return load_model(args.model, args.model_name, args.img_size, args.num_classes)
    except (ModelLoadError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None


def _metric_direction(name: str) -> str:
    """``"lower is better"`` / ``"higher is better"`` from the metric registry."""
    from .metrics import get_metric

    spec = get_metric(name)
    return f"{spec.better(next(iter(spec.columns)))} is better"


def explain(args: argparse.Namespace) -> int:
    """Explain images (default: bundled synthetic samples) with several methods;
    write a PNG grid of overlays and a JSON of the scores."""
    from .attr import to_tokens
    from .benchmark import default_methods, explain_images, mean_scores
    from .data import SyntheticObjects
    from .viz import is_signed, method_grid

    requested = _split([args.methods] if args.methods else None)
    methods = _expand_methods(requested)
    _check_methods(methods)
    if args.text is not None:
        if not [t for t in args.text if t.strip()]:
            raise UsageError("--text needs a non-empty prompt")
        if args.target is not None:
            raise UsageError(
                "--target names a class; with --text every prompt is explained"
            )
    pictures = _read_images(args.images) if args.images else None
    lm = _load_model(args)
    methods = _expand_methods(requested, lm.model)  # patterns: what applies
    if args.text is not None or lm.tokenizer is not None:
        return _explain_text(args, lm, methods, pictures)
    num_classes = len(lm.classes)
    if args.target is not None and num_classes and args.target >= num_classes:
        raise UsageError(
            f"--target {args.target} is out of range: the model has {num_classes} "
            f"classes (0..{num_classes - 1})"
        )
    masks: Optional[torch.Tensor] = None
    labels: Optional[torch.Tensor] = None
    boxes: Optional[List[Any]] = None
    if pictures is not None:
        raw, boxes = _letterboxed(pictures, lm.image_size, lm.mean)
        sources = [str(p) for p in args.images]
        shown: Any = pictures
    else:
        ds = SyntheticObjects(args.samples, seed=args.seed, image_size=lm.image_size)
        raw, sample_labels, masks, _ = ds.tensors()
        labels = torch.as_tensor(sample_labels)
        sources = [
            f"synthetic test sample {i} (seed {args.seed})" for i in range(len(ds))
        ]
    images = lm.transform(raw)
    if pictures is None:
        shown = images
    methods = methods or default_methods(lm.model)
    res = explain_images(lm, images, methods, args.target, masks)
    probs = res["logits"].softmax(-1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = lambda c: lm.classes[c] if c < len(lm.classes) else str(c)  # noqa: E731
    titles = []
    for i, t in enumerate(res["targets"]):
        pred, t = int(res["predictions"][i]), int(t)
        lines = [f"prediction: {name(pred)} ({probs[i, pred]:.2f})"]
        if args.target is not None:
            lines.append(f"explained: {name(t)} ({probs[i, t]:.2f})")
        if labels is not None:
            lines.append(f"label: {SyntheticObjects.classes[int(labels[i])]}")
        titles.append("\n".join(lines))
    png = out / "explanations.png"
    signed = [m for m in methods if is_signed(res["maps"][m])]
    method_grid(
        shown,
        res["maps"],
        str(png),
        titles=titles,
        mean=lm.mean,
        std=lm.std,
        boxes=boxes,
        cell=args.cell,
        signed=signed,
    )
    patch_maps = {m: _patch_map(to_tokens(a, lm.model)) for m, a in res["maps"].items()}
    per_image = []
    for i, src in enumerate(sources):
        pred, tgt = int(res["predictions"][i]), int(res["targets"][i])
        entry = {
            "source": src,
            "prediction": pred,
            "prediction_name": name(pred),
            "probability": float(probs[i, pred]),
            "target": tgt,
            "target_name": name(tgt),
            "scores": res["scores"][i],
            "patch_maps": {m: v[i] for m, v in patch_maps.items()},
        }
        if labels is not None:
            entry["label"] = int(labels[i])
            entry["label_name"] = SyntheticObjects.classes[int(labels[i])]
        per_image.append(entry)
    summary = {
        "model": lm.source,
        "methods": methods,
        "signed": signed,
        "image": str(png),
        "scores_help": {
            "deletion_auc": _metric_direction("deletion"),
            "insertion_auc": _metric_direction("insertion"),
            "pointing_game": "1 = the map's maximum lies on the object mask",
        },
        "mean_scores": mean_scores(res["scores"]),
        "images": per_image,
    }
    js = out / "explanations.json"
    js.write_text(_dumps(summary) + "\n")
    print(f"model: {lm.source}")
    print(f"wrote {png} ({len(methods)} methods x {images.shape[0]} images)")
    print(f"wrote {js}")
    return 0


def _metric_limits(items: Sequence[str]) -> Dict[str, int]:
    """``["saco=16", ...]`` -> ``{"saco": 16}``; a usage error otherwise."""
    limits = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise UsageError(
                f"--metric-limit takes METRIC=N with N >= 1, got {item!r}"
            )
        limits[name.strip()] = int(value)
    return limits


def _patch_map(tokens: torch.Tensor) -> List[List[List[float]]]:
    """``(B, gh, gw)`` patch sums, each map divided by its largest absolute
    value and rounded to 4 decimals: the maps of the figure, in numbers."""
    t = tokens.detach().double()
    scale = t.flatten(1).abs().amax(1).clamp_min(1e-300)[:, None, None]
    return (t / scale).round(decimals=4).tolist()


#: A JSON list of numbers only, as ``json.dumps(indent=2)`` spreads it.
_NUMBER_LIST = re.compile(r"\[\s*([-+\d.eE]+(?:,\s*[-+\d.eE]+)*)\s*\]")


def _dumps(obj: Any) -> str:
    """JSON indented by 2, with lists of numbers kept on one line."""
    return _NUMBER_LIST.sub(
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        json.dumps(obj, indent=2),
    )


def _explain_text(
    args: argparse.Namespace,
    lm: LoadedModel,
    methods: Optional[List[str]],
    pictures: Optional[List[Any]],
) -> int:
    """``explain --text``: a vision-language model's image-text similarity,
    one grid row per image and prompt, one column per method."""
    from .benchmark import default_methods, explain_prompts, mean_scores
    from .data import SyntheticScenes
    from .viz import method_grid

    if lm.tokenizer is None:
        raise UsageError(
            f"--text needs a vision-language model (--model synthetic_clip); "
            f"{lm.source} is an image classifier without a text tower"
        )
    if args.text is None:
        raise UsageError(
            f"{lm.source} explains prompts: give --text PROMPT (repeatable), e.g. "
            '--text "a red disk" --text "a blue square"'
        )
    prompts = [t.strip() for t in args.text if t.strip()]
    boxes: Optional[List[Any]] = None
    if pictures is not None:
        raw, boxes = _letterboxed(pictures, lm.image_size, lm.mean)
        sources = [str(p) for p in args.images]
    else:
        ds = SyntheticScenes(args.samples, seed=args.seed, image_size=lm.image_size)
        samples = [ds[i] for i in range(len(ds))]
        raw = torch.stack([s.image for s in samples])
        sources = [f"synthetic scene {i}: {s.caption}" for i, s in enumerate(samples)]
    images = lm.transform(raw)
    methods = methods or default_methods(lm.model, text=True)
    res = explain_prompts(lm, images, prompts, methods)
    P = len(prompts)
    probs = res["logits"].softmax(-1)
    shown: Any = (
        [p for p in pictures for _ in range(P)] if pictures is not None else res["images"]
    )
    titles, rows = [], []
    for r in range(len(res["targets"])):
        i, p = divmod(r, P)
        logit, prob = float(res["logits"][i, p]), float(probs[i, p])
        titles.append(f"{sources[i][:40]}\n'{prompts[p]}': {logit:.1f} (p={prob:.2f})")
        rows.append(
            {
                "source": sources[i],
                "prompt": prompts[p],
                "logit": logit,
                "probability": prob,
                "scores": res["scores"][r],
            }
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "explanations.png"
    method_grid(
        shown,
        res["maps"],
        str(png),
        titles=titles,
        mean=lm.mean,
        std=lm.std,
        boxes=None if boxes is None else [b for b in boxes for _ in range(P)],
    )
    summary = {
        "model": lm.source,
        "methods": methods,
        "prompts": prompts,
        "image": str(png),
        "score": "the model's image-text logit (logit scale times cosine); p: "
        "softmax over the prompts",
        "scores_help": {
            "sim_deletion_auc": _metric_direction("similarity_deletion"),
            "sim_insertion_auc": _metric_direction("similarity_insertion"),
        },
        "mean_scores": mean_scores(res["scores"]),
        "rows": rows,
    }
    js = out / "explanations.json"
    js.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"model: {lm.source}")
    print(
        f"wrote {png} ({len(methods)} methods x {len(sources)} images x "
        f"{P} prompts)"
    )
    print(f"wrote {js}")
    return 0


def benchmark(args: argparse.Namespace) -> int:
    """Run methods x metrics over a dataset; print and save the table."""
    from .benchmark import check_backend, make_dataset, run_benchmark

    try:
        check_backend(args.backend)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.set_num_threads(1)  # torchrun: one thread per rank
    kind, *rest = args.dataset
    if len(rest) > 1:
        raise UsageError("--dataset takes a kind and at most one PATH")
    if kind != "synthetic" and args.model is None:
        raise UsageError(
            f"--dataset {kind} needs --model (a timm name such as "
            "vit_base_patch16_224, or a checkpoint file)"
        )
    methods = _split(args.methods)
    _check_methods(methods)
    limits = _metric_limits(args.metric_limit or [])
    lm = _load_model(args)
    if lm.tokenizer is not None:
        raise UsageError(
            f"{lm.source} scores prompts, not classes: the benchmark's datasets "
            "are classification datasets (explain it with `captum-vit explain "
            "--text`; its localisation table: benchmarks/clip_localisation.py)"
        )
    ds = make_dataset(
        kind,
        rest[0] if rest else None,
        lm.image_size,
        lm.transform,
        args.limit,
        args.seed,
    )
    from .attr import list_methods
    from .benchmark import list_baselines

    baselines = _split(args.baselines) if args.baselines is not None else None
    if baselines is None:  # every sanity baseline when every method runs
        baselines = list_baselines() if methods is None else []
    seeds = args.seeds or [args.seed + r for r in range(args.repeat)]
    res = run_benchmark(
        lm.model,
        ds,
        (methods or list_methods(model=lm.model))
        + [b for b in baselines if b != "none"],
        _split(args.metrics),
        lm.mean,
        lm.std,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        show_progress=not args.no_progress,
        model_name=lm.source,
        seeds=seeds,
        limits=limits,
        backend=args.backend,
    )
    if res is None:  # a rank other than 0
        return 0
    print(f"{res.dataset}, {res.n} samples; {res.model}")
    print("mean over samples; arrows: which direction is better; bold: best")
    print()
    print(res.to_markdown(), end="")
    print()
    print(res.leaderboard().to_markdown(), end="")
    files = res.save(args.out, plots=not args.no_plots)
    print()
    for kind_, path in files.items():
        print(f"wrote {path}" + ("/" if kind_ == "plots" else ""))
    return 0


def insights(args: argparse.Namespace) -> int:
    """Serve the web visualiser on the embedded default model and benchmark."""
    from .insights import default_visualizer

    vis = default_visualizer(
        samples=args.samples,
        seed=args.seed,
        model=args.model,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        time_budget=args.time_budget,
    )
    try:
        vis.serve(
            host=args.host,
            port=args.port,
            blocking=True,
            allowed_hosts=args.allowed_host,
        )
    except OSError as e:  # port taken, address not on this machine
        raise UsageError(f"cannot serve on {args.host}:{args.port} ({e})") from None
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="embedded model name, checkpoint file (.pth/.pt/.bin/.safetensors) "
        "or timm name (pretrained, downloads); default: the embedded model",
    )
    p.add_argument(
        "--model-name", default=None, help="timm architecture of a checkpoint"
    )
    p.add_argument(
        "--img-size",
        type=_int_at_least(1),
        default=None,
        help="timm img_size of a checkpoint or timm model",
    )
    p.add_argument(
        "--num-classes", type=_int_at_least(1), default=None, help="classes of the head"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-vit", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "explain",
        help="explain images with several methods (PNG grid + JSON of scores)",
    )
    p.add_argument(
        "images", nargs="*", help="image files (default: bundled synthetic samples)"
    )
    _model_args(p)
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated method names or fnmatch patterns, 'all' for every "
        "registered method (default: the attention and LRP ones)",
    )
    p.add_argument(
        "--target",
        type=_int_at_least(0),
        default=None,
        help="class to explain (default: the predicted one)",
    )
    p.add_argument(
        "--text",
        action="append",
        default=None,
        metavar="PROMPT",
        help="a prompt to explain (repeatable) with a vision-language model "
        "(--model synthetic_clip): one row per image and prompt",
    )
    p.add_argument(
        "--samples", type=_int_at_least(1), default=4, help="bundled samples shown"
    )
    p.add_argument("--out", default="out", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the bundled samples")
    p.add_argument(
        "--cell",
        type=_positive_float,
        default=2.0,
        help="size of one cell of the figure in inches (default: 2.0)",
    )
    p.set_defaults(func=explain)
    p = sub.add_parser("benchmark", help="method x metric table over a dataset")
    p.add_argument(
        "--dataset",
        nargs="+",
        default=["synthetic"],
        metavar="KIND [PATH]",
        help="synthetic | imagenet-seg PATH | imagenet PATH | cifar10 PATH",
    )
    _model_args(p)
    p.add_argument("--methods", nargs="+", default=None, help="default: all")
    p.add_argument(
        "--metrics", nargs="+", default=None, help="default: all the dataset allows"
    )
    p.add_argument("--limit", type=int, default=None, help="first N samples")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="dataset and metric seed")
    p.add_argument("--out", default="out/benchmark", help="output folder")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1 ... (default: cpu; cuda:LOCAL_RANK under torchrun "
        "with CUDA)",
    )
    p.add_argument(
        "--backend",
        default=None,
        help="torch.distributed backend under torchrun: nccl or gloo (default: "
        "nccl when CUDA is available, else gloo)",
    )
    p.add_argument(
        "--baselines",
        nargs="*",
        default=None,
        help="sanity baselines (random_map, edge_map, randomised_model:METHOD; "
        "'none'); default: all registered ones when --methods is not given",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="runs with seeds SEED, SEED+1, ..."
    )
    p.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="repeat seeds (not --repeat)"
    )
    p.add_argument(
        "--metric-limit",
        nargs="+",
        default=None,
        metavar="METRIC=N",
        help="compute METRIC on the first N samples only",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the bar charts")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=benchmark)
    p = sub.add_parser("insights", help="web visualiser (embedded model, benchmark)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (0.0.0.0: every interface; anyone who reaches it "
        "can run the models)",
    )
    p.add_argument("--port", type=int, default=8050, help="port (0: any free one)")
    p.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a host name the page may be reached under (repeatable; '*': any)",
    )
    p.add_argument(
        "--samples", type=_int_at_least(1), default=32, help="benchmark images shown"
    )
    p.add_argument(
        "--model",
        default="synthetic_vit",
        help="embedded model: synthetic_vit, or synthetic_clip (a prompt box: "
        "explains image-text similarities)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the benchmark")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=20.0,
        help="largest image upload in MiB (default: 20)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=60.0,
        help="seconds one explanation request may run (default: 60)",
    )
    p.set_defaults(func=insights)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``captum-vit`` with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        int: the exit status (0 on success).

    Raises:
        SystemExit: status 2 for a usage error (one line on stderr, no
            traceback), as argparse does for bad arguments.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        parser.exit(2, f"{parser.prog} {args.command}: error: {e}\n")
    return 2  # pragma: no cover - parser.exit raises


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
