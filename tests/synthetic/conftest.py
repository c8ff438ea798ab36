"""The synthetic tests run tiny models: one thread is faster for them than two, and far faster
when the CPU is shared (two threads then wait on each other)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
