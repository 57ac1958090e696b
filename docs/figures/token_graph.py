"""Draw ``docs/_static/token_graph.png``: the windows, the shifted windows and
the patch merging of a Swin stage, from the index maps captum_vit builds
(``captum_vit.adapters.window_index`` and ``patch_merge_2x2``).

Run from the repository root: ``python docs/figures/token_graph.py``.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from captum_vit.adapters import patch_merge_2x2, window_index  # noqa: E402

GRID, WINDOW, SHIFT = (8, 8), (4, 4), (2, 2)
OUT = os.path.join(os.path.dirname(__file__), "..", "_static", "token_graph.png")


def _window_of(index: np.ndarray, n: int) -> np.ndarray:
    """Window id of every token (row-major) from an ``(nW, n)`` index map."""
    out = np.empty(n, dtype=int)
    for k, row in enumerate(index):
        out[row[row >= 0]] = k
    return out


def _grid(ax, labels, title, text=None, cmap="Pastel1"):
    h, w = labels.shape
    ax.imshow(labels, cmap=cmap, vmin=0, vmax=8)
    for i in range(h):
        for j in range(w):
            ax.text(
                j,
                i,
                str(i * w + j) if text is None else text[i, j],
                ha="center",
                va="center",
                fontsize=6,
            )
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.grid(which="minor", color="w", linewidth=0.8)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(title, fontsize=8)


def main() -> None:
    n = GRID[0] * GRID[1]
    plain = window_index(GRID, WINDOW, (0, 0), pad_first=False).numpy()
    shifted = window_index(GRID, WINDOW, SHIFT, pad_first=False).numpy()
    merge = patch_merge_2x2(GRID)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    _grid(
        axes[0],
        _window_of(plain, n).reshape(GRID),
        "layer l: 4 windows of 4x4 tokens\n(block-diagonal attention)",
    )
    # shifted windows, and the shift-mask bands inside each window
    sw = _window_of(shifted, n).reshape(GRID)
    r = (np.arange(GRID[0]) - SHIFT[0]) % GRID[0]
    c = (np.arange(GRID[1]) - SHIFT[1]) % GRID[1]
    band = lambda x, N, w, s: (x >= N - w).astype(int) + (x >= N - s)  # noqa: E731
    region = (
        band(r, GRID[0], WINDOW[0], SHIFT[0])[:, None] * 3
        + band(c, GRID[1], WINDOW[1], SHIFT[1])[None, :]
    )
    text = np.array(
        [
            [f"{i * GRID[1] + j}\n{'abcdefghi'[region[i, j]]}" for j in range(GRID[1])]
            for i in range(GRID[0])
        ]
    )
    _grid(
        axes[1],
        sw,
        "layer l+1: windows shifted by 2 (a permutation)\n"
        "letters: shift-mask bands, masked across",
        text=text,
    )
    # merging: each new token from its 2x2 sources
    H, W = (GRID[0] + 1) // 2, (GRID[1] + 1) // 2
    src = np.zeros(GRID, dtype=int)
    for i, row in enumerate(merge.index.numpy()):
        src.flat[row[row >= 0]] = i % 9
    text = np.array(
        [
            [f"{i * GRID[1] + j}\n->{(i // 2) * W + j // 2}" for j in range(GRID[1])]
            for i in range(GRID[0])
        ]
    )
    _grid(
        axes[2],
        src,
        f"patch merging: token -> new token of the {H}x{W} grid\n"
        "P has 1/4 at its four sources",
        text=text,
        cmap="tab20c",
    )
    fig.tight_layout()
    fig.savefig(OUT, dpi=130, bbox_inches="tight")
    print(f"wrote {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
