import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a loaded machine two OpenMP threads contend badly
    (a 100x slow-down measured here); restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
