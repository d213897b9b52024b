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


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread per test, then the previous setting: the models here are tiny,
    and on a busy 2-core machine extra OpenMP threads only spin-wait."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def in_mmdet_scope(mmdet_default_scope):
    """Every test here builds in mmdet's scope (tests/conftest.py)."""
    yield
