"""Fixtures shared by the vta_core audio tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """On the shared 2-core box 2 intra-op threads ran 4x slower than 1 even with OMP_WAIT_POLICY=PASSIVE."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def offline(monkeypatch):
    """No hub access, whatever the caller's environment says."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
