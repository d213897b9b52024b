"""Shared settings for the mmdetection integration tests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def without_onednn_convolutions():
    """Run convolutions on PyTorch's native CPU kernels instead of oneDNN's.

    These tests push many tiny tensors of ever-new shapes through small networks; oneDNN
    builds (and caches) a kernel for every new shape, which costs more than the
    convolutions themselves (measured: the tests of this folder take about 40% less CPU
    time without it). Comparisons are unaffected: both sides of every equality run on
    the same backend.
    """
    with torch.backends.mkldnn.flags(enabled=False):
        yield
