"""Suite-wide settings: one torch thread for every test.

Every test runs tiny models, where intra-op parallelism gains nothing; on a
machine whose cores are shared (CI runners, several jobs on one host), two
OpenMP threads per test contend with the other jobs and spin-wait: tests ran
up to 100x slower with two torch threads than with one. So the whole suite
runs with ``TORCH_THREADS = 1``: set once when pytest starts (before any
module- or session-scoped fixture trains a model), re-set after any test that
changed it (the CLI's ``--threads``, ``torch.distributed`` launches), and
exported as ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` to the subprocesses a test
starts (CLI runs, ``torchrun``, notebook kernels).
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest
import torch

TORCH_THREADS = 1


def pytest_configure(config: pytest.Config) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(TORCH_THREADS)
    torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(autouse=True)
def _pinned_torch_threads() -> Iterator[None]:
    """Re-pin the thread count after a test that changed it."""
    yield
    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)
