"""Suite-wide settings: one torch thread per test process.

On 2 shared cores, torch's default thread pool fights ONNX Runtime's and the other tests;
one thread cut the QAT/early-exit tests from 132 s to 15 s here. Results do not depend on it.
"""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    torch.set_num_threads(1)
    yield
