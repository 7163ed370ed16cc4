"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one thread: for many small models thread start-up costs more than it saves,
    and under `pytest -n 2` two workers with two threads each would oversubscribe two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
