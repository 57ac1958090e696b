"""The runner's ``torch.distributed`` backend: nccl when CUDA is available,
gloo on CPU, ``backend=`` overrides; bad names refused before any work. (The
two-process gloo run that checks sharded == single-process results is
``tests/benchmark/test_distributed.py``.)"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from captum_vit.benchmark import BACKENDS, _runner, check_backend
from captum_vit.cli import main


class FakeDist:
    """Records what the runner asks of torch.distributed instead of starting
    a process group."""

    def __init__(self, monkeypatch, cuda: bool) -> None:
        self.backends: list = []
        self.devices: list = []
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", "1")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "set_device", self.devices.append)
        monkeypatch.setattr(dist, "is_initialized", lambda: False)
        monkeypatch.setattr(dist, "init_process_group", self.backends.append)
        monkeypatch.setattr(dist, "get_rank", lambda: 1)
        monkeypatch.setattr(dist, "get_world_size", lambda: 2)


@pytest.mark.parametrize(
    "cuda, backend, expected",
    [
        (True, None, "nccl"),
        (False, None, "gloo"),
        (True, "gloo", "gloo"),
        (True, "nccl", "nccl"),
        (False, "gloo", "gloo"),
    ],
)
def test_backend_choice(monkeypatch, cuda, backend, expected):
    fake = FakeDist(monkeypatch, cuda)
    assert _runner._dist_setup(check_backend(backend)) == (1, 2, True)
    assert fake.backends == [expected]
    # with CUDA every rank takes its own GPU, whatever the backend
    assert fake.devices == ([1] if cuda else [])


def test_single_process_starts_no_group(monkeypatch):
    fake = FakeDist(monkeypatch, cuda=True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _runner._dist_setup("gloo") == (0, 1, False)
    assert fake.backends == []


def test_existing_group_with_another_backend(monkeypatch):
    FakeDist(monkeypatch, cuda=False)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    assert _runner._dist_setup("gloo") == (1, 2, False)
    with pytest.raises(ValueError, match="already initialised with 'gloo'"):
        _runner._dist_setup("nccl")


def test_bad_backends(monkeypatch):
    assert BACKENDS == ("nccl", "gloo")
    assert check_backend(None) is None and check_backend("gloo") == "gloo"
    with pytest.raises(ValueError, match="backend must be one of"):
        check_backend("mpi")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs CUDA.*gloo"):
        check_backend("nccl")


def test_cli_refuses_a_bad_backend_with_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", "--limit", "2", "--backend", "smoke-signals"])
    assert exit_.value.code == 2
    assert "backend must be one of" in capsys.readouterr().err
