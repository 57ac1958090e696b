"""Quality table: every implemented method on every benchmark metric, on the
bundled synthetic benchmark with the embedded default model.

Methods: every registered method (``captum_vit.attr.list_methods()``) plus
every public ``ViTAttribution`` class of ``captum_vit.attr`` that is not
registered (yet) and can be built from the model alone (named after the class,
snake case); classes that need more than the model (ViTShapley: a trained
surrogate and explainer) are listed as skipped. Metrics: all of
``captum_vit.benchmark.list_metrics()``. One torch thread.

Writes ``table.md``, ``table.csv``, ``per_sample.csv``, ``plots/`` and
``timing.json`` (seconds per method: explaining plus scoring) into ``--out``,
and prints the table with the command line that produced it.

Run: ``python benchmarks/quality_table.py [--limit 128] [--out out/quality]``
(128 samples: about 23 minutes on one busy CPU thread, as docs/benchmark.rst
records).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import time

import torch


def _snake(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def all_methods(model: torch.nn.Module):
    """``(factories, skipped)``: name -> factory(model), and the classes that
    cannot be built from the model alone, with the reason."""
    from captum_vit import attr

    factories, seen = {}, set()
    for name in attr.list_methods():
        factories[name] = lambda m, _n=name: attr.create_method(_n, m)
        seen.add(type(attr.create_method(name, model)))
    skipped = {}
    for cls_name in attr.__all__:
        cls = getattr(attr, cls_name)
        if not (
            inspect.isclass(cls)
            and issubclass(cls, attr.ViTAttribution)
            and cls is not attr.ViTAttribution
        ):
            continue
        if cls in seen:
            continue
        try:
            cls(model)
        except Exception as exc:  # needs more than the model
            skipped[cls_name] = f"{type(exc).__name__}: {exc}"
            continue
        factories[_snake(cls_name)] = cls
        seen.add(cls)
    return factories, skipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/quality")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from captum_vit.benchmark import (
        list_metrics,
        load_model,
        make_dataset,
        run_benchmark,
    )

    lm = load_model()
    factories, skipped = all_methods(lm.model)
    ds = make_dataset(
        "synthetic", None, lm.image_size, lm.transform, args.limit, args.seed
    )
    results, timing = [], {}
    for name, factory in factories.items():  # one method at a time: timings
        t0 = time.time()
        res = run_benchmark(
            lm.model,
            ds,
            {name: factory},
            list_metrics(),
            lm.mean,
            lm.std,
            batch_size=args.batch_size,
            seed=args.seed,
            model_name=lm.source,
        )
        timing[name] = round(time.time() - t0, 1)
        results.append(res)
    res = results[0]
    for other in results[1:]:  # same samples, same columns: merge the rows
        res.methods += other.methods
        res.values.update(other.values)
    files = res.save(args.out)
    with open(os.path.join(args.out, "timing.json"), "w") as f:
        json.dump({"seconds": timing, "skipped": skipped}, f, indent=2)
    cmd = "python benchmarks/quality_table.py " + " ".join(sys.argv[1:])
    print(f"$ {cmd.strip()}")
    print(f"{res.dataset}, {res.n} samples; {res.model}")
    print(f"model accuracy on these samples: {sum(res.correct) / res.n:.4f}")
    print(res.to_markdown())
    print("seconds per method:", json.dumps(timing))
    if skipped:
        print("skipped:", json.dumps(skipped, indent=2))
    print("wrote", ", ".join(files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
