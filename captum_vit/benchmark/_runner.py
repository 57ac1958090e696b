"""The method x metric runner, single process or sharded with torch.distributed."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch

from ..attr import patch_size as model_patch_size
from ..metrics import MetricContext, MetricSpec, get_metric, list_metrics
from ._baselines import create_baseline, is_baseline
from ._data import BenchmarkDataset, batches
from ._leaderboard import Leaderboard, write_texts

MethodsType = Union[Sequence[str], Mapping[str, Callable[[torch.nn.Module], Any]]]
#: one sample's results: (dataset index, correct, {method: {column: [value per
#: repeat seed]}})
Record = Tuple[int, bool, Dict[str, Dict[str, List[float]]]]


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
        seeds (list[int]): the repeat seeds (one run per seed).
        repeats (dict): ``repeats[method][column][k]`` is the list of the
            values of sample ``k``, one per seed; ``values`` holds their mean.
        correct_columns (list[str]): the columns also reported over the
            correctly classified samples only (the metrics registered with
            ``correct_only``: perturbation and segmentation tests).
        baselines (list[str]): the methods that are sanity baselines.
        seconds (dict[str, dict[str, float]]): wall time per method and
            step: ``"attribute"`` (explaining) and each metric's name (scoring),
            summed over the ranks of a distributed run.
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
        seeds: Optional[List[int]] = None,
        repeats: Optional[Dict[str, Dict[str, List[List[float]]]]] = None,
        correct_columns: Optional[List[str]] = None,
        baselines: Optional[List[str]] = None,
        seconds: Optional[Dict[str, Dict[str, float]]] = None,
    ) -> None:
        self.methods = methods
        self.columns = columns
        self.higher_is_better = higher_is_better
        self.indices = indices
        self.values = values
        self.correct = correct
        self.dataset = dataset
        self.model = model
        self.seeds = list(seeds) if seeds is not None else [0]
        self.repeats = repeats or {
            m: {c: [[v] for v in vals] for c, vals in cols.items()}
            for m, cols in values.items()
        }
        self.correct_columns = list(correct_columns or [])
        self.baselines = list(baselines or [])
        self.seconds = {m: dict(v) for m, v in (seconds or {}).items()}

    def add_column(
        self,
        column: str,
        higher_is_better: bool,
        values: Mapping[str, Sequence[float]],
    ) -> None:
        r"""Add a column computed outside the runner (e.g. on a subset, NaN
        elsewhere), the same value for every repeat seed.

        Args:
            column (str): its name (not already a column).
            higher_is_better (bool): its direction.
            values (dict[str, sequence of float]): method -> one value per
                sample, aligned with :attr:`indices`, for every method.
        """
        if column in self.columns:
            raise ValueError(f"column {column!r} exists")
        if set(values) != set(self.methods) or any(
            len(v) != self.n for v in values.values()
        ):
            raise ValueError("values needs one value per sample for every method")
        self.columns.append(column)
        self.higher_is_better[column] = bool(higher_is_better)
        for m in self.methods:
            vals = [float(v) for v in values[m]]
            self.values[m][column] = vals
            self.repeats[m][column] = [[v] * len(self.seeds) for v in vals]

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(self.indices)

    def table(self, correct_only: bool = False) -> Dict[str, Dict[str, float]]:
        r"""The aggregated table: for every method and column, the mean of the
        per-sample values over the samples where it is defined (NaN values are
        left out; NaN if there are none), summed in dataset order in float64.

        Args:
            correct_only (bool, optional): average over the correctly
                classified samples only (what the metrics compute with
                ``correct_only=True``). Default: False

        Returns:
            dict: ``table[method][column]``.
        """
        out: Dict[str, Dict[str, float]] = {}
        for m in self.methods:
            out[m] = {}
            for c in self.columns:
                vals = [
                    v
                    for v, ok in zip(self.values[m][c], self.correct)
                    if not math.isnan(v) and (ok or not correct_only)
                ]
                out[m][c] = math.fsum(vals) / len(vals) if vals else float("nan")
        return out

    def leaderboard(
        self, n_boot: int = 2000, level: float = 0.95, seed: int = 0
    ) -> Leaderboard:
        r"""The leaderboard: per method and column the mean with its bootstrap
        interval and the paired bootstrap comparison with the column's best
        method, for every column and, for :attr:`correct_columns`, over the
        correctly classified samples too (see
        :class:`~captum_vit.benchmark.Leaderboard`).

        Args:
            n_boot (int, optional): bootstrap draws. Default: 2000
            level (float, optional): interval coverage. Default: 0.95
            seed (int, optional): seed of the resampling. Default: 0

        Returns:
            Leaderboard
        """
        return Leaderboard.from_result(self, n_boot=n_boot, level=level, seed=seed)

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
        """Every per-sample value as CSV: ``index,method,<columns...>`` (the
        mean over the repeat seeds), then, with several seeds, one
        ``<column>@seed<s>`` column per seed."""
        multi = len(self.seeds) > 1
        extra = [f"{c}@seed{s}" for c in self.columns for s in self.seeds]
        lines = [
            ",".join(["index", "method"] + self.columns + (extra if multi else []))
        ]
        for m in self.methods:
            for k, idx in enumerate(self.indices):
                vals = [repr(self.values[m][c][k]) for c in self.columns]
                if multi:
                    vals += [
                        repr(v) for c in self.columns for v in self.repeats[m][c][k]
                    ]
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
        r"""Write ``table.md``, ``table.csv``, ``per_sample.csv``, the
        leaderboard (``leaderboard.md``, ``leaderboard.csv``,
        ``leaderboard_wide.csv``: :meth:`leaderboard`) and (with ``plots``)
        ``plots/<column>.png``, ``leaderboard/heatmap.png`` and
        ``leaderboard/ranks.png`` into ``folder``.

        Returns:
            dict: what was written, by kind.
        """
        files = write_texts(
            folder,
            {
                "markdown": ("table.md", self.to_markdown()),
                "csv": ("table.csv", self.to_csv()),
                "per_sample": ("per_sample.csv", self.per_sample_csv()),
            },
        )
        board = self.leaderboard()
        files.update(board.save(folder, plots=plots))
        if plots:
            files["plots"] = os.path.join(folder, "plots")
            self.plot(files["plots"])
        return files


#: the process-group backends the runner can use
BACKENDS = ("nccl", "gloo")


def check_backend(backend: Optional[str]) -> Optional[str]:
    """Validate a ``torch.distributed`` backend name for :func:`run_benchmark`.

    Args:
        backend (str or None): ``"nccl"`` (CUDA), ``"gloo"`` (CPU, or CUDA
            with the gathering through the CPU) or None (the default:
            ``nccl`` when CUDA is available, else ``gloo``).

    Returns:
        str or None: ``backend``.

    Raises:
        ValueError: an unknown name, or ``nccl`` without CUDA.
    """
    if backend is None:
        return None
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError(
            "backend 'nccl' needs CUDA, which is not available here: use 'gloo' "
            "(or leave the backend to the default, gloo on CPU)"
        )
    return backend


def _dist_setup(backend: Optional[str] = None) -> Tuple[int, int, bool]:
    """``(rank, world_size, created)``; initialises torch.distributed when the
    launcher set ``WORLD_SIZE`` > 1 and nobody did yet, with ``backend``
    (default: ``nccl`` when CUDA is available, else ``gloo``); with CUDA,
    each rank takes the GPU ``LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        default = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend or default)
        created = True
    elif backend is not None and dist.get_backend() != backend:
        raise ValueError(
            f"the process group is already initialised with {dist.get_backend()!r}, "
            f"not the backend {backend!r} asked for"
        )
    return dist.get_rank(), dist.get_world_size(), created


def _missing(spec: MetricSpec, dataset: BenchmarkDataset) -> List[str]:
    """The ground truth ``spec`` needs that ``dataset`` lacks."""
    has = {
        "masks": dataset.has_masks,
        "boxes": dataset.has_masks,  # the datasets with masks have boxes too
        "grid": dataset.grid is not None,
    }
    return [need for need in spec.needs if not has.get(need, True)]


class _Row(NamedTuple):
    """One row of the table: how to build its Attribution on a model for a
    seed, and whether it is a sanity baseline (rebuilt for every seed)."""

    make: Callable[[torch.nn.Module, int], Any]
    baseline: bool


def _resolve_methods(
    methods: Optional[MethodsType], model: torch.nn.Module
) -> Dict[str, _Row]:
    from ..attr import list_methods

    if methods is None:
        methods = list_methods(model=model)
    if isinstance(methods, Mapping):
        return {
            name: _Row(functools.partial(_from_factory, factory), False)
            for name, factory in methods.items()
        }
    rows = {}
    for name in methods:
        if is_baseline(name):
            rows[name] = _Row(functools.partial(_baseline, name), True)
        else:
            rows[name] = _Row(functools.partial(_method, name), False)
    return rows


def _from_factory(
    factory: Callable[[torch.nn.Module], Any], model: torch.nn.Module, seed: int
) -> Any:
    return factory(model)


def _baseline(name: str, model: torch.nn.Module, seed: int) -> Any:
    return create_baseline(name, model, seed)


def _method(name: str, model: torch.nn.Module, seed: int) -> Any:
    from ..attr import create_method

    return create_method(name, model)


def _attribute_factory(
    row: _Row, seed: int
) -> Callable[[torch.nn.Module], Callable[..., torch.Tensor]]:
    """``model -> attribute function`` of a row, for the metrics that explain
    with another model (model randomisation)."""
    return lambda model: row.make(model, seed).attribute


def _limited(
    limits: Optional[Mapping[str, int]], specs: List[MetricSpec]
) -> Dict[str, int]:
    out = {}
    for name, n in (limits or {}).items():
        if name not in {s.name for s in specs}:
            raise ValueError(f"limits names {name!r}, which is not among the metrics")
        if int(n) < 1:
            raise ValueError(f"limits[{name!r}] must be >= 1, got {n!r}")
        out[name] = int(n)
    return out


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
    seeds: Optional[Sequence[int]] = None,
    limits: Optional[Mapping[str, int]] = None,
    metric_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    backend: Optional[str] = None,
) -> Optional[BenchmarkResult]:
    r"""Run every method on every metric over a dataset.

    The samples are read in consecutive batches of ``batch_size``; each batch is
    explained by every method in one ``attribute`` call and scored by every
    metric, which returns one value per sample. The target is the label where
    the dataset has one, else the class the model predicts. Random draws of
    the metrics use ``seed``.

    **Repeats**: with ``seeds``, every metric whose values depend on the seed
    (:attr:`MetricSpec.seeded <captum_vit.metrics.MetricSpec.seeded>`: random
    subsets, noise, re-initialisation) and every seeded baseline (the random
    map) is computed once per seed; the deterministic ones are computed once and
    shared. :meth:`BenchmarkResult.leaderboard` bootstraps over samples and
    seeds.

    **Sanity baselines**: names of :func:`list_baselines` (``"random_map"``,
    ``"edge_map"``, ``"randomised_model:<method>"``) are accepted among
    ``methods``; they are explained like methods and marked in the table.

    **Distributed**: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group
    is initialised here if needed (``backend``; by default ``nccl`` when CUDA
    is available, each rank on ``cuda:LOCAL_RANK``, else ``gloo``), batch ``k``
    goes to rank
    ``k % world_size``, and the per-sample results are gathered on rank 0
    (:func:`torch.distributed.gather_object`) and sorted by dataset index.
    Every sample is computed in the same batch as in a single-process run, so
    rank 0 returns exactly the single-process result; other ranks return None.

    Args:
        model (torch.nn.Module): the model, taking normalised images.
        dataset (BenchmarkDataset): from :func:`make_dataset`.
        methods (list[str] or dict, optional): registry names
            (:func:`captum_vit.attr.list_methods`) and baseline names
            (:func:`list_baselines`), or ``name -> factory`` where
            ``factory(model)`` returns a Captum ``Attribution``.
            Default: None (every registered method that applies to the model)
        metrics (list[str], optional): names from
            :func:`captum_vit.metrics.list_metrics`.
            Default: None (every metric the dataset has ground truth for)
        mean (sequence of float, optional): normalisation mean of the
            dataset's images (the positive/negative perturbation tests use
            black). Default: (0, 0, 0)
        std (sequence of float, optional): normalisation std. Default: (1, 1, 1)
        batch_size (int, optional): samples per batch. Default: 16
        seed (int, optional): seed of the metrics' random draws (when
            ``seeds`` is None). Default: 0
        device (str or torch.device, optional): where to run; the model is
            moved there for the run and back afterwards. Default: None
            (``cuda:LOCAL_RANK`` under distributed CUDA, else the model's
            device)
        show_progress (bool, optional): tqdm progress bar (rank 0 only).
            Default: True
        model_name (str, optional): the model, in words, for the report.
            Default: ``""``
        seeds (sequence of int, optional): repeat the seeded metrics and
            baselines once per seed. Default: None (``[seed]``)
        limits (dict[str, int], optional): metric name -> number of samples:
            that metric is computed on the samples of dataset index below the
            number only (NaN for the others), for the metrics too slow to run
            on the whole dataset. Default: None
        metric_options (dict[str, dict], optional): metric name -> keyword
            options replacing its registered settings
            (:meth:`MetricSpec.compute <captum_vit.metrics.MetricSpec.compute>`),
            e.g. ``{"deletion": {"n_steps": 16}}``. Default: None
        backend (str, optional): the ``torch.distributed`` backend under
            ``torchrun``: ``"nccl"`` or ``"gloo"`` (see :func:`check_backend`).
            Default: None (``nccl`` when CUDA is available, else ``gloo``)

    Returns:
        BenchmarkResult or None: the result (None on ranks other than 0).

    Examples::

        >>> from captum_vit.benchmark import load_model, make_dataset, run_benchmark
        >>> lm = load_model()
        >>> ds = make_dataset("synthetic", image_size=lm.image_size,
        ...                   transform=lm.transform, limit=16)
        >>> res = run_benchmark(lm.model, ds, ["raw_attention", "random_map"],
        ...                     ["deletion", "saco"], lm.mean, lm.std, seeds=[0, 1])
        >>> print(res.leaderboard().to_markdown())
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
    seed_list = [int(seed)] if seeds is None else [int(s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds must be distinct and not empty, got {seeds!r}")
    limit = _limited(limits, specs)
    options = {name: dict(kw) for name, kw in (metric_options or {}).items()}
    unknown = set(options) - {s.name for s in specs}
    if unknown:
        raise ValueError(
            f"metric_options names {sorted(unknown)}, not among the metrics"
        )
    need_grid = any("grid" in s.needs for s in specs)
    columns = [c for s in specs for c in s.columns]
    higher = {c: hib for s in specs for c, hib in s.columns.items()}
    correct_columns = [c for s in specs if s.correct_only for c in s.columns]

    rank, world, created = _dist_setup(check_backend(backend))
    if device is None:
        if world > 1 and torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            device = next(model.parameters()).device
    device = torch.device(device)
    home = next(model.parameters()).device
    rows_spec = _resolve_methods(methods, model)
    names = list(rows_spec)
    built: Dict[Tuple[str, int], Any] = {}

    def method(name: str, s: int) -> Any:
        key = (name, s if rows_spec[name].baseline else seed_list[0])
        if key not in built:
            built[key] = rows_spec[name].make(model, key[1])
        return built[key]

    for name in names:  # unknown names fail here, before any work
        method(name, seed_list[0])
    steps = ["attribute"] + [spec.name for spec in specs]
    seconds = {name: {step: 0.0 for step in steps} for name in names}

    @contextlib.contextmanager
    def timed(name: str, step: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds[name][step] += time.perf_counter() - t0

    all_batches = batches(len(dataset), batch_size)
    mine = all_batches[rank::world]
    records: List[Record] = []
    bar = tqdm(
        total=len(mine) * len(names),
        desc=f"benchmark [rank {rank}/{world}]" if world > 1 else "benchmark",
        disable=not show_progress or rank != 0,
    )
    patch_size = model_patch_size(model, strict=False)
    try:
        model.to(device)  # and back to ``home`` at the end
        for idx in mine:
            batch = dataset.load(idx, grid=need_grid)
            x = batch["images"].to(device)
            labels = batch["labels"].to(device)
            with torch.no_grad():
                pred = model(x).argmax(-1)
            target = torch.where(labels >= 0, labels, pred)
            masks = None if batch["masks"] is None else batch["masks"].to(device)
            boxes = None if batch["boxes"] is None else batch["boxes"].to(device)
            grid = batch["grid"]
            if grid is not None:
                grid = (grid[0].to(device), grid[1].to(device), grid[2].to(device))
            rows: List[Dict[str, Dict[str, List[float]]]] = [{} for _ in idx]
            for name in names:
                bar.set_postfix_str(name)
                row = rows_spec[name]
                vals: Dict[str, List[List[float]]] = {c: [] for c in columns}
                first: Dict[str, List[float]] = {}
                a = None
                for r, s in enumerate(seed_list):
                    m = method(name, s)
                    if a is None or row.baseline:
                        with timed(name, "attribute"):
                            a = m.attribute(x, target=target).detach()
                    ctx = MetricContext(
                        forward_func=model,
                        inputs=x,
                        attributions=a,
                        target=target,
                        attribute_func=m.attribute,
                        masks=masks,
                        boxes=boxes,
                        mean=tuple(mean),
                        std=tuple(std),
                        patch_size=patch_size,
                        seed=s,
                        grid=grid,
                        model=model,
                        method_factory=_attribute_factory(row, s),
                    )
                    for spec in specs:
                        n_lim = limit.get(spec.name)
                        skip = n_lim is not None and min(idx) >= n_lim
                        if r > 0 and not (spec.seeded or row.baseline):
                            out = {c: first[c] for c in spec.columns}
                        elif skip:
                            out = {c: [float("nan")] * len(idx) for c in spec.columns}
                        else:
                            with timed(name, spec.name):
                                got = spec.compute(ctx, **options.get(spec.name, {}))
                            out = {
                                col: v.detach().double().reshape(-1).cpu().tolist()
                                for col, v in got.values.items()
                            }
                            if n_lim is not None:
                                out = {
                                    c: [
                                        v if i < n_lim else float("nan")
                                        for v, i in zip(vs, idx)
                                    ]
                                    for c, vs in out.items()
                                }
                        if r == 0:
                            first.update(out)
                        for col, vs in out.items():
                            vals[col].append(vs)
                for k in range(len(idx)):
                    rows[k][name] = {
                        c: [vals[c][r][k] for r in range(len(seed_list))]
                        for c in columns
                    }
                bar.update(1)
            correct = (pred == labels).cpu().tolist()
            records.extend(zip(idx, correct, rows))
    finally:
        bar.close()
        model.to(home)

    if world > 1:
        import torch.distributed as dist

        gathered: Optional[List[Any]] = [None] * world if rank == 0 else None
        dist.gather_object((records, seconds), gathered, dst=0)
        if created:
            dist.destroy_process_group()
        if rank != 0:
            return None
        parts = gathered or []
        records = [r for part in parts for r in part[0]]
        seconds = {
            n: {st: math.fsum(part[1][n][st] for part in parts) for st in steps}
            for n in names
        }
    records.sort(key=lambda r: r[0])
    repeats = {m: {c: [r[2][m][c] for r in records] for c in columns} for m in names}
    values = {m: {c: [_mean(v) for v in repeats[m][c]] for c in columns} for m in names}
    return BenchmarkResult(
        names,
        columns,
        higher,
        [int(r[0]) for r in records],
        values,
        [bool(r[1]) for r in records],
        dataset.name,
        model_name,
        seeds=seed_list,
        repeats=repeats,
        correct_columns=correct_columns,
        baselines=[n for n in names if rows_spec[n].baseline],
        seconds=seconds,
    )


def _mean(values: List[float]) -> float:
    """Mean of the finite values (NaN if none), in float64."""
    finite = [v for v in values if not math.isnan(v)]
    return math.fsum(finite) / len(finite) if finite else float("nan")
