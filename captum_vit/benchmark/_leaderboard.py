r"""The leaderboard of a benchmark run: means with bootstrap intervals, the
paired comparison of every method with the best one of each column, ranks, and
their CSV, Markdown and plots (:mod:`matplotlib`, imported when plotting)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ._stats import bootstrap_mean, paired_bootstrap

if TYPE_CHECKING:  # pragma: no cover
    from ._runner import BenchmarkResult

#: Suffix of the columns computed over the correctly classified samples only.
CORRECT = "@correct"


class Entry(NamedTuple):
    r"""One method in one column of the :class:`Leaderboard`.

    Attributes:
        mean (float): mean over the samples (of the mean over the seeds).
        low (float): lower end of the bootstrap interval of the mean.
        high (float): upper end.
        n (int): samples with a finite value.
        rank (float): rank of the mean in the column (1 = best; ties share the
            average rank; NaN without a value).
        diff (float): mean difference to the column's best method (0 for it).
        diff_low (float): lower end of the paired-bootstrap interval of ``diff``.
        diff_high (float): upper end.
        p_value (float): paired-bootstrap p-value of ``diff`` (NaN for the best).
        wins (int): samples where the method beats the best one.
        ties (int): samples where they are equal.
        losses (int): samples where it is worse.
    """

    mean: float
    low: float
    high: float
    n: int
    rank: float
    diff: float
    diff_low: float
    diff_high: float
    p_value: float
    wins: int
    ties: int
    losses: int


def write_texts(folder: str, texts: Dict[str, Tuple[str, str]]) -> Dict[str, str]:
    """Write ``{kind: (file name, text)}`` into ``folder``; ``{kind: path}``."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for kind, (name, text) in texts.items():
        paths[kind] = os.path.join(folder, name)
        with open(paths[kind], "w") as f:
            f.write(text)
    return paths


def _ranks(means: Dict[str, float], higher: bool) -> Dict[str, float]:
    """Average ranks (1 = best) of the finite means."""
    finite = {m: v for m, v in means.items() if not math.isnan(v)}
    order = sorted(finite, key=lambda m: -finite[m] if higher else finite[m])
    out = {m: float("nan") for m in means}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and finite[order[j + 1]] == finite[order[i]]:
            j += 1
        for m in order[i : j + 1]:
            out[m] = (i + j) / 2 + 1
        i = j + 1
    return out


@dataclass
class Leaderboard:
    r"""Per method and column: the mean with a bootstrap interval, the rank,
    and the paired bootstrap comparison with the column's best method
    (:func:`~captum_vit.benchmark._stats.paired_bootstrap`; the two-level
    bootstrap resamples samples and repeat seeds). Columns named
    ``<column>@correct`` are computed over the correctly classified samples
    only. Build it with :meth:`BenchmarkResult.leaderboard`.

    Attributes:
        methods (list[str]): rows, in the run's order.
        baselines (list[str]): the rows that are sanity baselines.
        columns (list[str]): the metric columns, then the ``@correct`` ones.
        higher_is_better (dict[str, bool]): per column.
        entries (dict): ``entries[column][method]`` is an :class:`Entry`.
        best (dict[str, str]): the best method of each column (None if empty).
        level (float): coverage of the intervals.
        n_boot (int): bootstrap draws.
        seeds (list[int]): the repeat seeds.
        n (int): samples of the run.
    """

    methods: List[str]
    baselines: List[str]
    columns: List[str]
    higher_is_better: Dict[str, bool]
    entries: Dict[str, Dict[str, Entry]]
    best: Dict[str, Optional[str]]
    level: float
    n_boot: int
    seeds: List[int]
    n: int

    @classmethod
    def from_result(
        cls,
        res: BenchmarkResult,
        n_boot: int = 2000,
        level: float = 0.95,
        seed: int = 0,
    ) -> Leaderboard:
        """Compute the leaderboard of a :class:`BenchmarkResult`."""
        correct = np.asarray(res.correct, dtype=bool)
        columns = list(res.columns) + [c + CORRECT for c in res.correct_columns]
        higher = dict(res.higher_is_better)
        entries: Dict[str, Dict[str, Entry]] = {}
        best: Dict[str, Optional[str]] = {}
        for k, col in enumerate(columns):
            base = col[: -len(CORRECT)] if col.endswith(CORRECT) else col
            higher[col] = res.higher_is_better[base]
            data = {}
            for m in res.methods:
                v = np.array(res.repeats[m][base], dtype=np.float64).reshape(res.n, -1)
                if col.endswith(CORRECT):
                    v = np.where(correct[:, None], v, np.nan)
                data[m] = v
            stats = {
                m: bootstrap_mean(data[m], n_boot, level, seed + k) for m in res.methods
            }
            means = {m: st.mean for m, st in stats.items()}
            ranks = _ranks(means, higher[col])
            finite = [m for m in res.methods if not math.isnan(means[m])]
            top = (
                (max if higher[col] else min)(finite, key=lambda m: means[m])
                if finite
                else None
            )
            best[col] = top
            entries[col] = {}
            for m in res.methods:
                st = stats[m]
                cmp = paired_bootstrap(
                    data[m],
                    data[top if top is not None else m],
                    higher[col],
                    n_boot,
                    level,
                    seed + k,
                )
                p = float("nan") if m == top or top is None else cmp.p_value
                entries[col][m] = Entry(
                    st.mean,
                    st.low,
                    st.high,
                    st.n,
                    ranks[m],
                    cmp.diff,
                    cmp.low,
                    cmp.high,
                    p,
                    cmp.wins,
                    cmp.ties,
                    cmp.losses,
                )
        return cls(
            list(res.methods),
            list(res.baselines),
            columns,
            higher,
            entries,
            best,
            level,
            n_boot,
            list(res.seeds),
            res.n,
        )

    def mean_ranks(self) -> Dict[str, float]:
        """Mean rank of each method over the columns (the ``@correct`` columns
        left out), NaN-ranked columns skipped."""
        out = {}
        for m in self.methods:
            r = [
                self.entries[c][m].rank
                for c in self.columns
                if not c.endswith(CORRECT) and not math.isnan(self.entries[c][m].rank)
            ]
            out[m] = sum(r) / len(r) if r else float("nan")
        return out

    def tied_with_best(self, column: str, method: str, alpha: float = 0.05) -> bool:
        """Whether ``method`` is not significantly different from the best of
        ``column`` (paired-bootstrap p-value at least ``alpha``)."""
        p = self.entries[column][method].p_value
        return not math.isnan(p) and p >= alpha

    def to_csv(self) -> str:
        """Long CSV: one line per method and column with every statistic."""
        head = ["method", "baseline", "column", "higher_is_better", *Entry._fields]
        head.insert(4, "best")
        lines = [",".join(head)]
        for c in self.columns:
            for m in self.methods:
                e = self.entries[c][m]
                cells = [
                    m,
                    str(m in self.baselines),
                    c,
                    str(self.higher_is_better[c]),
                    self.best[c] or "",
                ] + [repr(v) for v in e]
                lines.append(",".join(cells))
        return "\n".join(lines) + "\n"

    def _cell(self, column: str, method: str, digits: int) -> str:
        e = self.entries[column][method]
        if math.isnan(e.mean):
            return "--"
        text = f"{e.mean:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"
        if method == self.best[column]:
            return f"**{text}**"
        return text + (" †" if self.tied_with_best(column, method) else "")

    def _head(self, column: str) -> str:
        return f"{column} {'↑' if self.higher_is_better[column] else '↓'}"

    def to_markdown(self, digits: int = 3) -> str:
        r"""The leaderboard in Markdown: rows are methods (sanity baselines in
        italics), cells ``mean [low, high]``; bold: the best of the column;
        †: not significantly different from it (paired bootstrap, p >= 0.05);
        last column: the mean rank.

        Args:
            digits (int, optional): decimals shown. Default: 3

        Returns:
            str
        """
        ranks = self.mean_ranks()
        lines = [
            "| method | "
            + " | ".join(self._head(c) for c in self.columns)
            + " | mean rank ↓ |",
            "|" + "|".join(["---"] + ["---:"] * (len(self.columns) + 1)) + "|",
        ]
        for m in self.methods:
            name = f"*{m}*" if m in self.baselines else m
            cells = [self._cell(c, m, digits) for c in self.columns]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {ranks[m]:.2f} |")
        pct = round(100 * self.level)
        seeds = ", ".join(str(s) for s in self.seeds)
        lines.append("")
        lines.append(
            f"{self.n} samples, seeds {seeds}; [{pct}% bootstrap interval over "
            f"samples and seeds, {self.n_boot} draws]; bold: best; †: not "
            "significantly different from the best (paired bootstrap, p >= 0.05); "
            f"'{CORRECT}': correctly classified samples only."
        )
        return "\n".join(lines) + "\n"

    def to_wide_csv(self, digits: int = 3) -> str:
        """The Markdown table as CSV cells (for ``.. csv-table::``), with the
        mean rank."""
        ranks = self.mean_ranks()
        out = [
            ",".join(["method"] + [f'"{self._head(c)}"' for c in self.columns])
            + ',"mean rank ↓"'
        ]
        for m in self.methods:
            name = f"*{m}*" if m in self.baselines else m
            cells = [f'"{self._cell(c, m, digits)}"' for c in self.columns]
            out.append(",".join([name] + cells) + f",{ranks[m]:.2f}")
        return "\n".join(out) + "\n"

    def plot_heatmap(self, path: str) -> str:
        r"""A heat-map table: methods x columns, colour = the mean scaled per
        column so that the best method is 1 and the worst 0 (direction-aware),
        the mean written in each cell. Returns the file written."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        cols = self.columns
        grid = np.full((len(self.methods), len(cols)), np.nan)
        for j, c in enumerate(cols):
            v = np.array([self.entries[c][m].mean for m in self.methods])
            if not np.isfinite(v).any():
                continue
            lo, hi = np.nanmin(v), np.nanmax(v)
            span = hi - lo
            score = (v - lo) / span if span > 0 else np.ones_like(v)
            grid[:, j] = score if self.higher_is_better[c] else 1 - score
        fig, ax = plt.subplots(
            figsize=(1.0 + 0.62 * len(cols), 1.2 + 0.32 * len(self.methods))
        )
        ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        for i, m in enumerate(self.methods):
            for j, c in enumerate(cols):
                e = self.entries[c][m]
                if not math.isnan(e.mean):
                    weight = "bold" if self.best[c] == m else "normal"
                    ax.text(
                        j,
                        i,
                        f"{e.mean:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        fontweight=weight,
                    )
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(
            [self._head(c) for c in cols], rotation=60, ha="right", fontsize=7
        )
        ax.set_yticks(range(len(self.methods)))
        ax.set_yticklabels(
            [f"({m})" if m in self.baselines else m for m in self.methods], fontsize=7
        )
        ax.set_title(
            f"mean per method and metric (n={self.n}); colour: best (green) to "
            "worst (red) of each column",
            fontsize=8,
        )
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def plot_ranks(self, path: str) -> str:
        r"""A rank plot: each method's rank in every column (dots) and its mean
        rank (diamond), methods sorted by mean rank. Returns the file
        written."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        ranks = self.mean_ranks()
        order = sorted(self.methods, key=lambda m: (math.isnan(ranks[m]), ranks[m]))
        cols = [c for c in self.columns if not c.endswith(CORRECT)]
        fig, ax = plt.subplots(figsize=(6.4, 1.0 + 0.3 * len(order)))
        rng = np.random.default_rng(0)
        for i, m in enumerate(order):
            r = [self.entries[c][m].rank for c in cols]
            y = i + rng.uniform(-0.18, 0.18, len(r))
            colour = "tab:gray" if m in self.baselines else "tab:blue"
            ax.scatter(r, y, s=8, color=colour, alpha=0.5)
            ax.scatter([ranks[m]], [i], marker="D", s=28, color="black")
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels(
            [f"({m})" if m in self.baselines else m for m in order], fontsize=7
        )
        ax.invert_yaxis()
        ax.set_xlabel(
            "rank in each metric column (1 = best); diamond: mean rank", fontsize=8
        )
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def save(self, folder: str, plots: bool = True) -> Dict[str, str]:
        """Write ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard_wide.csv``
        and (with ``plots``) ``leaderboard/heatmap.png`` and
        ``leaderboard/ranks.png``."""
        files = write_texts(
            folder,
            {
                "leaderboard": ("leaderboard.md", self.to_markdown()),
                "leaderboard_csv": ("leaderboard.csv", self.to_csv()),
                "leaderboard_wide": ("leaderboard_wide.csv", self.to_wide_csv()),
            },
        )
        if plots:
            os.makedirs(os.path.join(folder, "leaderboard"), exist_ok=True)
            files["heatmap"] = self.plot_heatmap(
                os.path.join(folder, "leaderboard", "heatmap.png")
            )
            files["ranks"] = self.plot_ranks(
                os.path.join(folder, "leaderboard", "ranks.png")
            )
        return files
