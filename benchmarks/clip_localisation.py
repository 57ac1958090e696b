"""Open-vocabulary localisation table: every method on the embedded
vision-language model ``synthetic_clip``, LeGrad's protocol on captioned
multi-object scenes.

For every object of every held-out :class:`~captum_vit.data.SyntheticScenes`
image (``split="test"``), the image is explained for the prompt naming that
object (``object_prompt(shape, colour)``: one of the 64 prompts of a
``text_similarity`` over every (shape, colour) pair, the model's logits) and
the map is scored against that object's mask: the pointing game, the IoU of
the map min-max normalised and thresholded at 0.5 (mean over pairs: the
mIoU), and deletion / insertion AUC on the prompt's logit itself, patch by
patch (lower / higher is better). A row ``random`` scores seeded uniform noise
maps. Methods: every registered method that can be built from the similarity
model alone (ViT Shapley needs a trained surrogate and explainer: skipped).
One torch thread.

Run::

    PYTHONPATH=$PWD python benchmarks/clip_localisation.py --n 100 \\
        --out docs/clip_localisation.inc

writes the reST table (included by docs/clip.rst) and prints it; ``--csv``
writes the per-pair values too.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Dict, List

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="scenes")
    parser.add_argument("--seed", type=int, default=1, help="seed of the scenes")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per batch")
    parser.add_argument("--out", default="docs/clip_localisation.inc")
    parser.add_argument("--csv", default=None, help="per-pair values (CSV)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import captum_vit as cv
    from captum_vit import zoo
    from captum_vit.attr import create_method, list_methods
    from captum_vit.data import SyntheticScenes
    from captum_vit.metrics import MetricContext, get_metric, object_pairs
    from captum_vit.zoo.train_clip import all_prompts

    clip, transform, tokenizer, meta = zoo.load("synthetic_clip")
    sim = cv.text_similarity(clip, all_prompts(), tokenizer)
    ds = SyntheticScenes(args.n, seed=args.seed, split="test")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))
    labels = torch.where(batch.shapes >= 0, batch.shapes * 8 + batch.colours, -1)
    pairs = object_pairs(transform(batch.image), labels, batch.masks)
    M = len(pairs.target)
    names = ["pointing_game", "open_vocab_iou", "similarity_deletion"]
    names.append("similarity_insertion")
    specs = [get_metric(n) for n in names]
    columns = [c for s in specs for c in s.columns]

    methods: Dict[str, object] = {}
    skipped: Dict[str, str] = {}
    for name in list_methods():
        try:
            methods[name] = create_method(name, sim)
        except (NotImplementedError, ValueError, TypeError) as e:
            skipped[name] = str(e).split(";")[0].split(":")[0]
    gen = torch.Generator().manual_seed(0)

    rows: Dict[str, Dict[str, float]] = {}
    per_pair: List[List[object]] = []
    seconds: Dict[str, float] = {}
    for name in ["random"] + list(methods):
        values: Dict[str, List[torch.Tensor]] = {c: [] for c in columns}
        start = time.perf_counter()
        for s in range(0, M, args.batch_size):
            x = pairs.images[s : s + args.batch_size]
            t = pairs.target[s : s + args.batch_size]
            if name == "random":
                attr = torch.rand(len(x), 8, 8, generator=gen)
            else:
                attr = methods[name].attribute(x, target=t, output="tokens")
            ctx = MetricContext(
                forward_func=sim,
                inputs=x,
                attributions=attr,
                target=t,
                masks=pairs.masks[s : s + args.batch_size],
                patch_size=8,
            )
            for spec in specs:
                for col, v in spec.compute(ctx).values.items():
                    values[col].append(v.float())
        seconds[name] = time.perf_counter() - start
        cat = {c: torch.cat(v) for c, v in values.items()}
        rows[name] = {c: float(torch.nanmean(v)) for c, v in cat.items()}
        for m in range(M):
            per_pair.append([name, m] + [float(cat[c][m]) for c in columns])
        print(f"{name}: {rows[name]} ({seconds[name]:.0f} s)", flush=True)

    better = {c: s.better(c) for s in specs for c in s.columns}
    titles = {
        "pointing_game": "Pointing game",
        "ov_iou": "mIoU (0.5)",
        "sim_deletion_auc": "Deletion AUC",
        "sim_insertion_auc": "Insertion AUC",
    }
    best = {}
    for c in columns:
        vals = [rows[n][c] for n in methods if not math.isnan(rows[n][c])]
        best[c] = (max if better[c] == "higher" else min)(vals)
    lines = [
        ".. list-table:: Open-vocabulary localisation on ``synthetic_clip`` "
        f"({args.n} held-out scenes, {M} objects; bold: best)",
        "   :header-rows: 1",
        "",
        "   * - Method",
    ]
    for c in columns:
        arrow = "↑" if better[c] == "higher" else "↓"
        lines.append(f"     - {titles[c]} {arrow}")
    for name in ["random"] + list(methods):
        lines.append(f"   * - ``{name}``")
        for c in columns:
            v = rows[name][c]
            cell = f"{v:.3f}"
            if name != "random" and abs(v - best[c]) < 1e-12:
                cell = f"**{cell}**"
            lines.append(f"     - {cell}")
    lines.append("")
    command = "python benchmarks/clip_localisation.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None
    )
    lines.append(f"Made by ``{command}``.")
    if skipped:
        lines.append(
            "Skipped: "
            + "; ".join(f"``{n}`` ({why.strip()})" for n, why in skipped.items())
            + "."
        )
    lines.append("")
    text = "\n".join(lines)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["method", "pair"] + columns)
            w.writerows(per_pair)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
