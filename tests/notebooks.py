"""Execute the tutorial notebooks: the suite's check and ``make notebooks``.

The notebooks in ``tutorials/`` are committed WITH their outputs (figures show
where users read them: GitHub, the docs). ``make notebooks``, i.e.
``python -m tests.notebooks [NOTEBOOK ...]``, re-executes them in place, each in
a fresh kernel started in a temporary directory, and records a hash of the
code cells in the notebook's metadata; ``tests/test_tutorials.py`` re-executes
them as well and checks that the committed outputs belong to the current code
(the hash), so a changed cell without refreshed outputs fails the suite.

The kernel stores figures as JPEG (quality 90, :data:`KERNEL_CONFIG`): the
tutorials' figures are overlays on textured pictures, which PNG compresses
poorly (a grid of maps is 0.7 MB as PNG, 0.17 MB as JPEG), and the notebooks
are committed with their outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
KERNEL = "python3"
TIMEOUT_S = 600
#: metadata key under which ``make notebooks`` records the code cells' hash
META_KEY = "captum_vit"
#: IPython configuration of the kernel: figures as JPEG, quality 90
KERNEL_CONFIG = """\
c.InlineBackend.figure_formats = {"jpeg"}
c.InlineBackend.print_figure_kwargs = {
    "bbox_inches": "tight",
    "pil_kwargs": {"quality": 90},
}
"""


def code_hash(nb: Any) -> str:
    """SHA-256 of the notebook's code cells (their sources, in order)."""
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def _kernel_env(ipython_dir: str) -> Dict[str, str]:
    """The kernel's environment: ours, minus a non-interactive matplotlib
    backend (the kernel's inline backend puts the figures in the outputs),
    without progress bars (a hundred stderr fragments with timings in a
    committed notebook, different at every run) and without tqdm's warning
    that ipywidgets is absent; IPython's configuration is read from
    ``ipython_dir`` (:data:`KERNEL_CONFIG`)."""
    profile = Path(ipython_dir) / "profile_default"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
    env = dict(os.environ)
    env["IPYTHONDIR"] = ipython_dir
    env.pop("MPLBACKEND", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["TQDM_DISABLE"] = "1"
    env["PYTHONWARNINGS"] = "ignore:IProgress not found"
    return env


def execute(nb: Any, cwd: Optional[str] = None) -> Any:
    """Execute ``nb`` (an ``nbformat`` notebook) in place in a fresh kernel.

    Args:
        nb (nbformat.NotebookNode): the notebook; its outputs are replaced.
        cwd (str, optional): the kernel's working directory.
            Default: a temporary directory, removed afterwards.

    Returns:
        nbformat.NotebookNode: ``nb``, executed.
    """
    import nbclient

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as ipy:
        client = nbclient.NotebookClient(
            nb,
            timeout=TIMEOUT_S,
            kernel_name=KERNEL,
            record_timing=False,
            coalesce_streams=True,  # one output per stream: stable diffs
            resources={"metadata": {"path": cwd or tmp}},
        )
        client.execute(env=_kernel_env(ipy))
    return nb


def errors(nb: Any) -> List[Dict[str, Any]]:
    """The error outputs of the notebook's code cells."""
    return [
        o
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def refresh(path: Path) -> None:
    """Re-execute the notebook at ``path`` and write it back with its outputs
    and the hash of its code cells."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    execute(nb)
    bad = errors(nb)
    if bad:
        raise RuntimeError(f"{path}: {bad[0]['ename']}: {bad[0]['evalue']}")
    nb.metadata[META_KEY] = {"code_sha256": code_hash(nb)}
    nbformat.write(nb, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    for path in paths or NOTEBOOKS:
        print(f"executing {path}", flush=True)
        refresh(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
