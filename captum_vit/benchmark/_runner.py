"""The method x metric runner, single process or sharded with torch.distributed."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..metrics import MetricContext, MetricSpec, get_metric, list_metrics
from ._data import BenchmarkDataset, batches

MethodsType = Union[Sequence[str], Mapping[str, Callable[[torch.nn.Module], Any]]]
#: one sample's results: (dataset index, correct, {method: {column: value}})
Record = Tuple[int, bool, Dict[str, Dict[str, float]]]


class BenchmarkResult:
    r"""Per-sample results of :func:`run_benchmark` and the table they make.

    Attributes:
        methods (list[str]): the methods, in table order (rows).
        columns (list[str]): the metric columns, in table order.
        higher_is_better (dict[str, bool]): per column.
        indices (list[int]): dataset index of every sample, ascending.
        values (dict): ``values[method][column]`` is the list of per-sample
            values, aligned with ``indices`` (NaN where a metric is undefined,
            e.g. the pointing game on an empty mask).
        correct (list[bool]): whether the model's top-1 prediction equals the
            label, per sample (False where there is no label).
        dataset (str): the dataset, in words.
        model (str): the model, in words.
    """

    def __init__(
        self,
        methods: List[str],
        columns: List[str],
        higher_is_better: Dict[str, bool],
        indices: List[int],
        values: Dict[str, Dict[str, List[float]]],
        correct: List[bool],
        dataset: str = "",
        model: str = "",
    ) -> None:
        self.methods = methods
        self.columns = columns
        self.higher_is_better = higher_is_better
        self.indices = indices
        self.values = values
        self.correct = correct
        self.dataset = dataset
        self.model = model

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(self.indices)

    def table(self) -> Dict[str, Dict[str, float]]:
        r"""The aggregated table: for every method and column, the mean of the
        per-sample values over the samples where it is defined (NaN values are
        left out; NaN if there are none), summed in dataset order in float64.

        Returns:
            dict: ``table[method][column]``.
        """
        out: Dict[str, Dict[str, float]] = {}
        for m in self.methods:
            out[m] = {}
            for c in self.columns:
                vals = [v for v in self.values[m][c] if not math.isnan(v)]
                out[m][c] = math.fsum(vals) / len(vals) if vals else float("nan")
        return out

    def best(self) -> Dict[str, List[str]]:
        """The best method(s) of each column (ties kept)."""
        tab = self.table()
        out: Dict[str, List[str]] = {}
        for c in self.columns:
            vals = {m: tab[m][c] for m in self.methods if not math.isnan(tab[m][c])}
            if not vals:
                out[c] = []
                continue
            pick = max if self.higher_is_better[c] else min
            target = pick(vals.values())
            out[c] = [m for m, v in vals.items() if v == target]
        return out

    def to_markdown(self, digits: int = 4) -> str:
        r"""The table in Markdown: one row per method, one column per metric
        (arrow: which direction is better), the best value of each column in
        bold.

        Args:
            digits (int, optional): decimals shown. Default: 4

        Returns:
            str
        """
        tab, best = self.table(), self.best()
        head = ["method"] + [
            f"{c} {'↑' if self.higher_is_better[c] else '↓'}" for c in self.columns
        ]
        lines = [
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---"] + ["---:"] * len(self.columns)) + "|",
        ]
        for m in self.methods:
            cells = [m]
            for c in self.columns:
                text = f"{tab[m][c]:.{digits}f}"
                cells.append(f"**{text}**" if m in best[c] else text)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """The table as CSV (full float precision, ``repr``)."""
        tab = self.table()
        lines = [",".join(["method"] + self.columns)]
        for m in self.methods:
            lines.append(",".join([m] + [repr(tab[m][c]) for c in self.columns]))
        return "\n".join(lines) + "\n"

    def per_sample_csv(self) -> str:
        """Every per-sample value as CSV: ``index,method,<columns...>``."""
        lines = [",".join(["index", "method"] + self.columns)]
        for m in self.methods:
            for k, idx in enumerate(self.indices):
                vals = [repr(self.values[m][c][k]) for c in self.columns]
                lines.append(",".join([str(idx), m] + vals))
        return "\n".join(lines) + "\n"

    def plot(self, folder: str) -> List[str]:
        r"""One matplotlib bar chart per column (methods on the x axis), saved
        as ``folder/<column>.png``.

        Returns:
            list[str]: the files written.
        """
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        os.makedirs(folder, exist_ok=True)
        tab, paths = self.table(), []
        for c in self.columns:
            fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(self.methods) + 1), 3.2))
            vals = [tab[m][c] for m in self.methods]
            ax.bar(range(len(vals)), vals, color="tab:blue")
            ax.set_xticks(range(len(vals)))
            ax.set_xticklabels(self.methods, rotation=40, ha="right", fontsize=8)
            arrow = (
                "higher is better" if self.higher_is_better[c] else "lower is better"
            )
            ax.set_title(f"{c} ({arrow}, n={self.n})", fontsize=9)
            fig.tight_layout()
            path = os.path.join(folder, f"{c}.png")
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
        return paths

    def save(self, folder: str, plots: bool = True) -> Dict[str, str]:
        r"""Write ``table.md``, ``table.csv``, ``per_sample.csv`` and (with
        ``plots``) ``plots/<column>.png`` into ``folder``.

        Returns:
            dict: what was written, by kind.
        """
        os.makedirs(folder, exist_ok=True)
        files = {
            "markdown": os.path.join(folder, "table.md"),
            "csv": os.path.join(folder, "table.csv"),
            "per_sample": os.path.join(folder, "per_sample.csv"),
        }
        with open(files["markdown"], "w") as f:
            f.write(self.to_markdown())
        with open(files["csv"], "w") as f:
            f.write(self.to_csv())
        with open(files["per_sample"], "w") as f:
            f.write(self.per_sample_csv())
        if plots:
            files["plots"] = os.path.join(folder, "plots")
            self.plot(files["plots"])
        return files


def _dist_setup() -> Tuple[int, int, bool]:
    """``(rank, world_size, created)``; initialises torch.distributed when the
    launcher set ``WORLD_SIZE`` > 1 and nobody did yet."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
        created = True
    return dist.get_rank(), dist.get_world_size(), created


def _missing(spec: MetricSpec, dataset: BenchmarkDataset) -> List[str]:
    """The ground truth ``spec`` needs that ``dataset`` lacks."""
    has = {
        "masks": dataset.has_masks,
        "boxes": dataset.has_masks,  # the datasets with masks have boxes too
        "grid": dataset.grid is not None,
    }
    return [need for need in spec.needs if not has.get(need, True)]


def _patch_size(model: torch.nn.Module, inputs: torch.Tensor) -> Optional[int]:
    """The model's patch side for the metrics: an int for square patches, None
    (the metrics then work on pixels) otherwise."""
    # TODO(public patch_size): use the public captum_vit.attr helper once it lands
    from ..attr import patch_window

    _, ph, pw = patch_window(model, inputs)
    return int(ph) if ph == pw else None


def _resolve_methods(
    methods: Optional[MethodsType], model: torch.nn.Module
) -> Dict[str, Any]:
    from ..attr import create_method, list_methods

    if methods is None:
        methods = list_methods(model=model)
    if isinstance(methods, Mapping):
        return {name: factory(model) for name, factory in methods.items()}
    return {name: create_method(name, model) for name in methods}


def run_benchmark(
    model: torch.nn.Module,
    dataset: BenchmarkDataset,
    methods: Optional[MethodsType] = None,
    metrics: Optional[Sequence[str]] = None,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    batch_size: int = 16,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
    show_progress: bool = True,
    model_name: str = "",
) -> Optional[BenchmarkResult]:
    r"""Run every method on every metric over a dataset.

    The samples are read in consecutive batches of ``batch_size``; each batch is
    explained by every method in one ``attribute`` call and scored by every
    metric, which returns one value per sample. The target is the label where
    the dataset has one, else the class the model predicts. Random draws of
    the metrics use ``seed``.

    **Distributed**: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group
    is initialised here if needed (``nccl`` when CUDA is available, each rank on
    ``cuda:LOCAL_RANK``; else ``gloo``), batch ``k`` goes to rank
    ``k % world_size``, and the per-sample results are gathered on rank 0
    (:func:`torch.distributed.gather_object`) and sorted by dataset index.
    Every sample is computed in the same batch as in a single-process run, so
    rank 0 returns exactly the single-process result; other ranks return None.

    Args:
        model (torch.nn.Module): the model, taking normalised images.
        dataset (BenchmarkDataset): from :func:`make_dataset`.
        methods (list[str] or dict, optional): registry names
            (:func:`captum_vit.attr.list_methods`), or ``name -> factory``
            where ``factory(model)`` returns a Captum ``Attribution``.
            Default: None (every registered method that applies to the model)
        metrics (list[str], optional): names from
            :func:`captum_vit.metrics.list_metrics`.
            Default: None (every metric the dataset has ground truth for)
        mean (sequence of float, optional): normalisation mean of the
            dataset's images (the positive/negative perturbation tests use
            black). Default: (0, 0, 0)
        std (sequence of float, optional): normalisation std. Default: (1, 1, 1)
        batch_size (int, optional): samples per batch. Default: 16
        seed (int, optional): seed of the metrics' random draws. Default: 0
        device (str or torch.device, optional): where to run; the model is
            moved there for the run and back afterwards. Default: None
            (``cuda:LOCAL_RANK`` under distributed CUDA, else the model's
            device)
        show_progress (bool, optional): tqdm progress bar (rank 0 only).
            Default: True
        model_name (str, optional): the model, in words, for the report.
            Default: ``""``

    Returns:
        BenchmarkResult or None: the result (None on ranks other than 0).

    Examples::

        >>> from captum_vit.benchmark import load_model, make_dataset, run_benchmark
        >>> lm = load_model()
        >>> ds = make_dataset("synthetic", image_size=lm.image_size,
        ...                   transform=lm.transform, limit=16)
        >>> res = run_benchmark(lm.model, ds, ["raw_attention", "rollout"],
        ...                     ["deletion", "pointing_game"], lm.mean, lm.std)
        >>> print(res.to_markdown())
    """
    from tqdm.auto import tqdm

    if metrics is None:
        metrics = [m for m in list_metrics() if not _missing(get_metric(m), dataset)]
    specs = [get_metric(m) for m in metrics]
    for spec in specs:
        missing = _missing(spec, dataset)
        if missing:
            raise ValueError(
                f"metric {spec.name!r} needs {' and '.join(missing)}; "
                f"{dataset.name} has none"
            )
    need_grid = any("grid" in s.needs for s in specs)
    columns = [c for s in specs for c in s.columns]
    higher = {c: hib for s in specs for c, hib in s.columns.items()}

    rank, world, created = _dist_setup()
    if device is None:
        if world > 1 and torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            device = next(model.parameters()).device
    device = torch.device(device)
    home = next(model.parameters()).device
    attrs = _resolve_methods(methods, model)
    names = list(attrs)

    all_batches = batches(len(dataset), batch_size)
    mine = all_batches[rank::world]
    records: List[Record] = []
    bar = tqdm(
        total=len(mine) * len(names),
        desc=f"benchmark [rank {rank}/{world}]" if world > 1 else "benchmark",
        disable=not show_progress or rank != 0,
    )
    try:
        model.to(device)  # and back to ``home`` at the end
        for idx in mine:
            batch = dataset.load(idx, grid=need_grid)
            x = batch["images"].to(device)
            patch_size = _patch_size(model, x)
            labels = batch["labels"].to(device)
            with torch.no_grad():
                pred = model(x).argmax(-1)
            target = torch.where(labels >= 0, labels, pred)
            masks = None if batch["masks"] is None else batch["masks"].to(device)
            boxes = None if batch["boxes"] is None else batch["boxes"].to(device)
            grid = batch["grid"]
            if grid is not None:
                grid = (grid[0].to(device), grid[1].to(device), grid[2].to(device))
            rows: List[Dict[str, Dict[str, float]]] = [{} for _ in idx]
            for name in names:
                bar.set_postfix_str(name)
                method = attrs[name]
                a = method.attribute(x, target=target).detach()
                ctx = MetricContext(
                    forward_func=model,
                    inputs=x,
                    attributions=a,
                    target=target,
                    attribute_func=method.attribute,
                    masks=masks,
                    boxes=boxes,
                    mean=tuple(mean),
                    std=tuple(std),
                    patch_size=patch_size,
                    seed=seed,
                    grid=grid,
                )
                vals: Dict[str, List[float]] = {}
                for spec in specs:
                    for col, v in spec.compute(ctx).values.items():
                        vals[col] = v.detach().double().reshape(-1).cpu().tolist()
                for k in range(len(idx)):
                    rows[k][name] = {c: vals[c][k] for c in columns}
                bar.update(1)
            correct = (pred == labels).cpu().tolist()
            records.extend(zip(idx, correct, rows))
    finally:
        bar.close()
        model.to(home)

    if world > 1:
        import torch.distributed as dist

        gathered: Optional[List[Any]] = [None] * world if rank == 0 else None
        dist.gather_object(records, gathered, dst=0)
        if created:
            dist.destroy_process_group()
        if rank != 0:
            return None
        records = [r for part in gathered or [] for r in part]
    records.sort(key=lambda r: r[0])
    values = {m: {c: [r[2][m][c] for r in records] for c in columns} for m in names}
    return BenchmarkResult(
        names,
        columns,
        higher,
        [int(r[0]) for r in records],
        values,
        [bool(r[1]) for r in records],
        dataset.name,
        model_name,
    )
