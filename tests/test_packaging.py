"""The package as users get it: ``python -m build`` makes an sdist and, from
it, a wheel that carries the package data (the embedded model's weights, the
visualiser's static files); the wheel installs into a clean environment where
``captum-vit explain`` runs on the embedded model, away from the source tree."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what the build reads: the package and the project metadata
SOURCES = ("captum_vit", "setup.cfg", "pyproject.toml", "README.md")


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.slow
def test_wheel_installs_and_runs_explain(tmp_path):
    pytest.importorskip("build")
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy(path, src / name)
    # offline: setuptools comes from this environment (the dev extra)
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src],
        env=_clean_env(),
    )
    (wheel,) = dist.glob("captum_vit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for data in (
        "captum_vit/zoo/weights/synthetic_vit.safetensors",
        "captum_vit/zoo/weights/synthetic_vit.json",
        "captum_vit/py.typed",
    ):
        assert data in names, data
    assert any(n.startswith("captum_vit/insights/static/") for n in names)

    # A clean venv without pip; the dependencies (torch, timm, ...) are those
    # of this interpreter, reached through a .pth line. (A venv made with
    # --system-site-packages from a venv would see the base interpreter's
    # packages, not this one's.) A .pth line does not run the .pth files of
    # that directory, so an editable install of captum_vit there stays inert.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    parent = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib.strip()) / "_parent_env.pth").write_text("\n".join(parent) + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", py, "install", "--no-deps"]
        + ["--no-index", "--quiet", wheel]
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _clean_env()
    where = _run(
        [py, "-c", "import captum_vit; print(captum_vit.__file__)"], cwd=work, env=env
    )
    assert Path(where.strip()).is_relative_to(venv), where
    printed = _run(
        [venv / "bin" / "captum-vit", "explain", "--samples", "2"]
        + ["--methods", "raw_attention,rollout", "--out", "demo"],
        cwd=work,
        env=env,
    )
    assert "embedded model 'synthetic_vit'" in printed
    assert (work / "demo" / "explanations.png").stat().st_size > 0
    summary = json.loads((work / "demo" / "explanations.json").read_text())
    assert summary["methods"] == ["raw_attention", "rollout"]
    assert len(summary["images"]) == 2
