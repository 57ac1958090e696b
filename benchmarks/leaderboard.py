"""The leaderboard: every registered method and the sanity baselines on every
metric, on every embedded model named, with bootstrap statistics, the orderings
published in the literature checked, the model-randomisation curves, and the
machine and time it took. Writes what ``docs/leaderboard.rst`` shows.

One command regenerates it (on the 2-core development machine: two processes,
one torch thread each)::

    torchrun --standalone --nproc_per_node 2 benchmarks/leaderboard.py \\
        --model synthetic_vit --samples 128 --out docs/_static/leaderboard

(``python benchmarks/leaderboard.py ...`` runs it in one process). Models other
issues add are one more argument: ``--model synthetic_vit synthetic_clip
synthetic_swin``. Per model it writes ``<out>/<model>/``: the benchmark's files
(``table.md``, ``leaderboard.md``, ``leaderboard.csv``, ``per_sample.csv``,
``plots/``, ``leaderboard/heatmap.png``, ``leaderboard/ranks.png``),
``orderings.csv``, ``randomisation.csv``, ``randomisation.png`` and ``run.json``
(the machine, load, wall time, seconds per method and metric); then
``<out>/leaderboard.inc``, the reStructuredText the docs page includes, for
every model folder in ``<out>``.

Settings (``LEADERBOARD_OPTIONS``, ``LEADERBOARD_LIMITED``): the registry's, except
deletion / insertion with 16 steps (17 points) instead of one per patch,
faithfulness correlation and sensitivity-n with 16 random subsets instead of 32,
ROAD at 5 removal fractions (10, 30, 50, 70, 90%) instead of 9, and the two
metrics that re-run the method many times per batch (max-sensitivity: 4 times,
model randomisation: once per cascade step) on the first
``--attribute-samples`` (16) samples: with every metric at its registered settings the run would take
about 2.4 times as long (estimated from ``run.json``'s seconds per step and the
cost ratios of ``benchmarks/metric_cost.py``), past the 15 minutes this
leaderboard is budgeted on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

#: Settings that differ from the registry's, for the time budget (see above).
LEADERBOARD_OPTIONS: Dict[str, Dict[str, Any]] = {
    "deletion": {"n_steps": 16},
    "insertion": {"n_steps": 16},
    "faithfulness_correlation": {"n_runs": 16},
    "sensitivity_n": {"n_subsets": 16},
    "road": {"fractions": (0.9, 0.7, 0.5, 0.3, 0.1)},
}
#: Metrics computed on the first ``--attribute-samples`` samples only (they re-run
#: the method several times per batch); model randomisation is computed there by
#: this script (its curves are plotted), the others by the runner.
LEADERBOARD_LIMITED = ("sensitivity_max", "model_randomisation")
#: The randomised-model sanity baseline: this method on a re-initialised model.
RANDOMISED_METHOD = "generic_attention"

#: Chefer et al. (2021a)'s methods, in their perturbation / segmentation order.
CHEFER = [
    "transformer_lrp",
    "partial_lrp",
    "rollout",
    "raw_attention",
    "vit_gradcam",
    "lrp",
]
CHEFER_NEGATIVE = [
    "transformer_lrp", "rollout", "partial_lrp", "raw_attention", "lrp", "vit_gradcam"
]  # fmt: skip

#: Orderings published in the literature: (source, column, methods best first).
ORDERINGS: List[Tuple[str, str, List[str]]] = [
    (
        "Wu et al. 2024 (SaCo), ViT-B, ImageNet",
        "saco",
        ["generic_attention"] + CHEFER,
    ),
    (
        "Chefer et al. 2021a, positive perturbation, ImageNet",
        "pos_perturbation_auc",
        CHEFER,
    ),
    (
        "Chefer et al. 2021a, negative perturbation, ImageNet",
        "neg_perturbation_auc",
        CHEFER_NEGATIVE,
    ),
    (
        "Chefer et al. 2021a, segmentation mIoU, ImageNet-Segmentation",
        "seg_miou",
        CHEFER,
    ),
    (
        "Chefer et al. 2021a, segmentation pixel accuracy, ImageNet-Segmentation",
        "seg_pixel_acc",
        CHEFER,
    ),
]


def machine() -> Dict[str, Any]:
    """The machine, in words and numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [
                ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "load_average_start": list(os.getloadavg()),
    }


def orderings(res, n_boot: int = 2000) -> List[Dict[str, Any]]:
    """For each published ordering, every adjacent pair: the paired bootstrap of
    the published-better minus the published-worse method (direction-aware), and
    Kendall's tau between the published order and the order of the means."""
    from scipy.stats import kendalltau

    from captum_vit.benchmark import paired_bootstrap

    rows = []
    for source, column, order in ORDERINGS:
        for col in (column, column + "@correct"):
            base = col.split("@")[0]
            if base not in res.columns or any(m not in res.methods for m in order):
                continue
            if col.endswith("@correct") and base not in res.correct_columns:
                continue
            higher = res.higher_is_better[base]
            keep = np.asarray(res.correct, bool) if col.endswith("@correct") else None

            def data(m: str, base: str = base, keep: Any = keep) -> np.ndarray:
                v = np.array(res.repeats[m][base], dtype=np.float64).reshape(res.n, -1)
                return v if keep is None else np.where(keep[:, None], v, np.nan)

            means = {m: float(np.nanmean(data(m))) for m in order}
            ours = sorted(order, key=lambda m: -means[m] if higher else means[m])
            tau = kendalltau(range(len(order)), [ours.index(m) for m in order])
            for a, b in zip(order[:-1], order[1:]):
                cmp = paired_bootstrap(data(a), data(b), higher, n_boot)
                better = cmp.diff > 0 if higher else cmp.diff < 0
                if cmp.p_value < 0.05:
                    verdict = "reproduced" if better else "reversed"
                else:
                    verdict = "not resolved"
                rows.append(
                    {
                        "source": source,
                        "column": col,
                        "pair": f"{a} > {b}",
                        "diff": cmp.diff,
                        "low": cmp.low,
                        "high": cmp.high,
                        "p_value": cmp.p_value,
                        "wins": cmp.wins,
                        "ties": cmp.ties,
                        "losses": cmp.losses,
                        "verdict": verdict,
                        "kendall_tau": float(tau.statistic),
                        "kendall_p": float(tau.pvalue),
                        "our_order": " > ".join(ours),
                    }
                )
    return rows


def randomisation_curves(
    lm: Any, ds: Any, methods: Sequence[str], n: int, seed: int
) -> Dict[str, Dict[str, Any]]:
    """Per method, :func:`captum_vit.metrics.model_randomisation` on the first
    ``n`` samples (their labels as targets): the layers, the per-sample Spearman
    and SSIM ``(n, L)`` and the seconds it took."""
    from captum_vit.attr import create_method
    from captum_vit.benchmark import create_baseline, is_baseline
    from captum_vit.metrics import model_randomisation

    batch = ds.load(list(range(n)))
    x, y = batch["images"], batch["labels"]
    curves = {}
    for name in methods:
        if is_baseline(name):
            factory = lambda m, nm=name: create_baseline(nm, m, seed).attribute  # noqa: E731
        else:
            factory = lambda m, nm=name: create_method(nm, m).attribute  # noqa: E731
        t0 = time.perf_counter()
        res = model_randomisation(lm.model, factory, x, y, seed=seed)
        curves[name] = {
            "layers": res.layers,
            "spearman": res.spearman.double().tolist(),
            "ssim": res.ssim.double().tolist(),
            "seconds": time.perf_counter() - t0,
        }
    return curves


def add_randomisation_columns(res: Any, curves: Dict[str, Dict[str, Any]]) -> None:
    """The registry's ``model_randomisation`` columns (the mean over the cascade
    per sample) from the curves, NaN past the samples they cover."""
    from captum_vit.metrics import get_metric

    spec = get_metric("model_randomisation")
    for column, key in zip(spec.columns, ("spearman", "ssim")):
        values = {}
        for meth in res.methods:
            per = [float(np.mean(v)) for v in curves[meth][key]]
            values[meth] = per + [float("nan")] * (res.n - len(per))
        res.add_column(column, spec.columns[column], values)


def plot_curves(curves: Dict[str, Any], path: str, baselines: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), sharex=True)
    layers = next(iter(curves.values()))["layers"]
    xs = np.arange(len(layers) + 1)
    cmap = plt.get_cmap("tab20")
    for i, (name, c) in enumerate(curves.items()):
        style = "--" if name in baselines else "-"
        for ax, key in zip(axes, ("spearman", "ssim")):
            mean = np.nanmean(np.array(c[key], dtype=np.float64), axis=0).tolist()
            ax.plot(xs, [1.0] + mean, style, color=cmap(i % 20), label=name, lw=1.2)
    for ax, title in zip(axes, ("Spearman rank correlation (|map|)", "SSIM")):
        ax.set_xticks(xs)
        ax.set_xticklabels(["trained"] + layers, rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-0.45, 1.05)
        ax.grid(alpha=0.3)
        ax.set_xlabel("re-initialised down to (cascade, top to bottom)", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.suptitle(
        "Model randomisation: similarity to the trained model's map", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_curves(folder: str) -> Dict[str, Dict[str, Any]]:
    """The curves of ``<folder>/randomisation.csv`` (as
    :func:`randomisation_curves` returns them, without the seconds)."""
    curves: Dict[str, Dict[str, Any]] = {}
    with open(os.path.join(folder, "randomisation.csv")) as f:
        next(f)
        for line in f:
            meth, k, layer, r, q = line.rstrip("\n").split(",")
            c = curves.setdefault(meth, {"layers": [], "spearman": [], "ssim": []})
            if int(k) == len(c["spearman"]):
                c["spearman"].append([])
                c["ssim"].append([])
            if int(k) == 0:
                c["layers"].append(layer)
            c["spearman"][int(k)].append(float(r))
            c["ssim"][int(k)].append(float(q))
    return curves


def _rst_table(header: List[str], rows: List[List[str]], title: str) -> str:
    out = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for row in [header] + rows:
        out.append("   * - " + str(row[0]))
        out.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(out) + "\n"


def _cell(entry, best: bool, tied: bool) -> str:
    if math.isnan(entry.mean):
        return "--"
    text = f"{entry.mean:.3f} [{entry.low:.3f}, {entry.high:.3f}]"
    if best:
        return f"**{text}**"
    return text + (" †" if tied else "")


def model_section(folder: str, name: str) -> str:
    """The reStructuredText of one model's leaderboard, from its files."""
    from captum_vit.benchmark import Entry

    with open(os.path.join(folder, "run.json")) as f:
        run = json.load(f)
    board = run["leaderboard"]
    lines = [name, "-" * len(name), ""]
    m = run["machine"]
    lines += [
        f"{run['dataset']}, {run['n']} samples (model accuracy on them "
        f"{run['accuracy']:.4f}); {run['model']}; seeds "
        f"{', '.join(map(str, run['seeds']))}.",
        "",
        f"**Wall time {run['wall_seconds'] / 60:.1f} min** on {m['cpu']} "
        f"({m['cores']} cores, shared with other jobs: load average "
        f"{m['load_average_start'][0]:.1f} at the start, "
        f"{run['load_average_end'][0]:.1f} at the end), {m['world_size']} "
        f"process(es) x {m['torch_threads']} torch thread(s), torch {m['torch']}.",
        "",
        ".. code-block:: text",
        "",
        f"   $ {run['command']}",
        "",
    ]
    cols = board["columns"]
    higher = board["higher_is_better"]
    header = (
        ["method"] + [f"{c} {'↑' if higher[c] else '↓'}" for c in cols] + ["mean rank"]
    )
    rows = []
    for meth in board["methods"]:
        cells = []
        for c in cols:
            e = board["entries"][c][meth]
            entry = Entry(*e)
            tied = not math.isnan(entry.p_value) and entry.p_value >= 0.05
            cells.append(_cell(entry, board["best"][c] == meth, tied))
        label = f"*{meth}* (baseline)" if meth in board["baselines"] else meth
        rows.append([label] + cells + [f"{board['mean_ranks'][meth]:.2f}"])
    lines.append(
        _rst_table(
            header,
            rows,
            f"{name}: mean [95% bootstrap interval]; bold: best; †: not "
            "significantly different from the best (paired bootstrap, p >= 0.05)",
        )
    )
    rel = os.path.basename(folder)
    lines += [
        f".. image:: /_static/leaderboard/{rel}/leaderboard/heatmap.png",
        "   :width: 100%",
        "",
        f".. image:: /_static/leaderboard/{rel}/leaderboard/ranks.png",
        "   :width: 60%",
        "",
    ]
    # orderings
    rows = [
        [
            o["source"],
            f"``{o['column']}``",
            o["pair"],
            f"{o['diff']:+.4f} [{o['low']:+.4f}, {o['high']:+.4f}]",
            f"{o['p_value']:.4f}",
            f"{o['wins']}/{o['ties']}/{o['losses']}",
            o["verdict"],
            f"{o['kendall_tau']:+.2f} (p {o['kendall_p']:.2f})",
        ]
        for o in run["orderings"]
    ]
    if rows:
        lines.append(
            _rst_table(
                [
                    "published ordering",
                    "column",
                    "pair (published: left better)",
                    "difference [95% CI], left - right",
                    "p (paired bootstrap)",
                    "left better / equal / worse (images)",
                    "here",
                    "Kendall tau, whole order",
                ],
                rows,
                f"{name}: the orderings of the literature, pair by pair",
            )
        )
        orders = {}
        for o in run["orderings"]:
            orders[(o["source"], o["column"])] = o["our_order"]
        lines.append("Orders of the means here:")
        lines.append("")
        for (source, col), order in orders.items():
            lines.append(f"* {source}, ``{col}``: {order}")
        lines.append("")
    if run["curve_samples"]:
        lines += [
            f".. image:: /_static/leaderboard/{rel}/randomisation.png",
            "   :width: 100%",
            "",
            f"Model randomisation curves: mean over the first {run['curve_samples']} "
            "samples of the similarity between the map on the trained model and "
            "on the copy re-initialised down to each layer (dashed: sanity "
            "baselines).",
            "",
        ]
    secs = run["seconds"]
    rows = [
        [meth, f"{sum(v.values()):.0f}", f"{v.get('attribute', 0.0):.0f}"]
        + [f"{v.get(k, 0.0):.0f}" for k in run["metrics"]]
        for meth, v in secs.items()
    ]
    lines.append(
        _rst_table(
            ["method", "total s", "attribute"] + run["metrics"],
            rows,
            f"{name}: seconds per method and step (summed over processes)",
        )
    )
    return "\n".join(lines) + "\n"


def write_include(out: str, replot: bool = False) -> str:
    """``<out>/leaderboard.inc``: every model folder's section (with
    ``replot``, the randomisation plots are drawn again from their CSV)."""
    parts = []
    for name in sorted(os.listdir(out)):
        folder = os.path.join(out, name)
        if not os.path.exists(os.path.join(folder, "run.json")):
            continue
        if replot and os.path.exists(os.path.join(folder, "randomisation.csv")):
            with open(os.path.join(folder, "run.json")) as f:
                baselines = json.load(f)["leaderboard"]["baselines"]
            path = os.path.join(folder, "randomisation.png")
            plot_curves(load_curves(folder), path, baselines)
        parts.append(model_section(folder, name))
    path = os.path.join(out, "leaderboard.inc")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


def run_model(name: str, args: argparse.Namespace, command: str) -> Optional[str]:
    from captum_vit.attr import list_methods
    from captum_vit.benchmark import (
        list_metrics,
        load_model,
        make_dataset,
        run_benchmark,
    )

    info = machine()
    lm = load_model(name)
    ds = make_dataset(
        "synthetic", None, lm.image_size, lm.transform, args.samples, args.seed
    )
    methods = list(args.methods or list_methods()) + [
        "random_map",
        "edge_map",
        f"randomised_model:{RANDOMISED_METHOD}",
    ]
    metrics = args.metrics or list_metrics()
    limits = {m: args.attribute_samples for m in LEADERBOARD_LIMITED if m in metrics}
    options = {k: v for k, v in LEADERBOARD_OPTIONS.items() if k in metrics}
    randomisation = "model_randomisation" in metrics
    t0, cpu0 = time.time(), time.process_time()
    res = run_benchmark(
        lm.model,
        ds,
        methods,
        [m for m in metrics if m != "model_randomisation"],
        lm.mean,
        lm.std,
        batch_size=args.batch_size,
        seed=args.seed,
        show_progress=not args.no_progress,
        model_name=lm.source,
        seeds=args.seeds,
        limits={k: v for k, v in limits.items() if k != "model_randomisation"},
        metric_options=options,
        backend=args.backend,
    )
    if res is None:  # a rank other than 0
        return None
    curves: Dict[str, Any] = {}
    if randomisation:
        n = min(args.attribute_samples, res.n)
        curves = randomisation_curves(lm, ds, methods, n, args.seeds[0])
        add_randomisation_columns(res, curves)
        for meth in methods:
            res.seconds[meth]["model_randomisation"] = curves[meth]["seconds"]
    wall, cpu = time.time() - t0, time.process_time() - cpu0
    folder = os.path.join(args.out, name)
    res.save(folder, plots=False)  # the tables; the heat-map and rank plot:
    board = res.leaderboard()
    board.save(folder)
    if curves:
        plot_curves(curves, os.path.join(folder, "randomisation.png"), res.baselines)
        with open(os.path.join(folder, "randomisation.csv"), "w") as f:
            f.write("method,sample,layer,spearman,ssim\n")
            for meth, c in curves.items():
                for k, (rs, ss) in enumerate(zip(c["spearman"], c["ssim"])):
                    for layer, r, q in zip(c["layers"], rs, ss):
                        f.write(f"{meth},{k},{layer},{r!r},{q!r}\n")
    order_rows = orderings(res)
    with open(os.path.join(folder, "orderings.csv"), "w") as f:
        if order_rows:
            f.write(",".join(order_rows[0]) + "\n")
            for o in order_rows:
                f.write(
                    ",".join(
                        f'"{v}"' if isinstance(v, str) else repr(v) for v in o.values()
                    )
                    + "\n"
                )
    run = {
        "command": command,
        "model": res.model,
        "dataset": res.dataset,
        "n": res.n,
        "accuracy": sum(res.correct) / max(res.n, 1),
        "seeds": res.seeds,
        "metrics": metrics,
        "options": {
            k: {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in v.items()}
            for k, v in options.items()
        },
        "limits": limits,
        "curve_samples": min(args.attribute_samples, res.n) if curves else 0,
        "machine": info,
        "load_average_end": list(os.getloadavg()),
        "wall_seconds": wall,
        "cpu_seconds_rank0": cpu,
        "seconds": res.seconds,
        "orderings": order_rows,
        "leaderboard": {
            "methods": board.methods,
            "baselines": board.baselines,
            "columns": board.columns,
            "higher_is_better": board.higher_is_better,
            "best": board.best,
            "mean_ranks": board.mean_ranks(),
            "entries": {
                c: {m: list(e) for m, e in d.items()} for c, d in board.entries.items()
            },
        },
    }
    with open(os.path.join(folder, "run.json"), "w") as f:
        json.dump(run, f, indent=1, default=float)
    print(
        f"{name}: {res.n} samples, {len(methods)} rows, {len(res.columns)} columns, "
        f"{wall / 60:.1f} min"
    )
    print(board.to_markdown())
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", nargs="+", default=["synthetic_vit"], help="embedded models"
    )
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--out", default="docs/_static/leaderboard")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="repeat seeds")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--attribute-samples",
        type=int,
        default=16,
        help="samples of the metrics that re-run the method many times",
    )
    p.add_argument(
        "--methods", nargs="+", default=None, help="default: every registered"
    )
    p.add_argument(
        "--metrics", nargs="+", default=None, help="default: every registered"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument(
        "--backend",
        default=None,
        help="torch.distributed backend under torchrun: nccl or gloo (default: "
        "nccl when CUDA is available, else gloo)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--include-only",
        action="store_true",
        help="only rewrite <out>/leaderboard.inc (and the randomisation plots) "
        "from the files there",
    )
    args = p.parse_args(argv)
    if args.include_only:
        print("wrote", write_include(args.out, replot=True))
        return 0
    torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = (
        f"torchrun --standalone --nproc_per_node {world} " if world > 1 else "python "
    )
    command = (
        launcher
        + "benchmarks/leaderboard.py "
        + " ".join(sys.argv[1:] if argv is None else list(argv))
    )
    wrote = [run_model(name, args, command) for name in args.model]
    if any(wrote):
        print("wrote", write_include(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
