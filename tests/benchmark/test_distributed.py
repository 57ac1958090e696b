"""``torchrun --nproc_per_node 2 -m captum_vit benchmark`` prints exactly the
single-process table (two CPU processes, gloo; the backend choice itself:
``tests/benchmark/test_backend.py``)."""

import os
import subprocess
import sys

import pytest
import torch

from captum_vit.cli import main
from tests.benchmark._tiny import write_tiny_checkpoint

ARGS = [
    "benchmark",
    "--limit", "8",
    "--batch-size", "2",
    "--methods", "raw_attention", "rollout",
    "--metrics", "deletion", "pointing_game",
    "--no-plots",
    "--no-progress",
    "--threads", "1",
]  # fmt: skip


def _run(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_torchrun_two_processes_prints_the_single_process_table(
    tmp_path, monkeypatch, capsys
):
    ckpt = write_tiny_checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:  # the single-process run, in this process (saves a start-up)
        assert main([*ARGS, "--model", ckpt, "--out", "one"]) == 0
    finally:
        torch.set_num_threads(threads)
    single = capsys.readouterr().out
    dist = _run(
        [
            sys.executable, "-m", "torch.distributed.run",
            "--standalone", "--nproc_per_node", "2",
            "-m", "captum_vit", *ARGS, "--model", ckpt, "--out", "two",
            "--backend", "gloo",  # the default on CPU, named as on a GPU machine
        ],
        tmp_path,
    )  # fmt: skip

    def table(out):  # everything before the "wrote <path>" lines
        return out.split("\nwrote ")[0]

    assert "| raw_attention |" in table(single)
    assert table(dist) == table(single)
    assert dist.count("| rollout |") == 2  # table and leaderboard, by rank 0 only
    for name in (
        "table.md",
        "table.csv",
        "per_sample.csv",
        "leaderboard.md",
        "leaderboard.csv",
    ):
        one = (tmp_path / "one" / name).read_bytes()
        two = (tmp_path / "two" / name).read_bytes()
        assert one == two, name
    rows = (tmp_path / "two" / "per_sample.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:9]] == [str(i) for i in range(8)]
