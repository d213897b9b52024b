"""Fixtures for the fused-kernel tests."""
import shutil

import pytest
import torch

import mmdysample  # noqa: F401  (registers every upsampler)
from mmdysample.ops import extension as extension_module


@pytest.fixture(autouse=True)
def seeded_rng():
    """Every test starts from the same RNG state, so inputs (and margins) are reproducible."""
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread unless a test asks for more (then restored): the inputs are tiny,
    and on a busy 2-core machine OpenMP threads waiting for each other made small calls 10x
    slower. ``test_thread_partitioning`` covers the multi-threaded split."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='session')
def fused_extension():
    """The compiled kernel (built here on a cold cache: ~20 s on 2 cores).

    Where a C++ compiler exists a failed build is a test failure, not a skip: the fused path
    must work on every machine that can build it.
    """
    if shutil.which(extension_module._compiler().split()[0]) is None:
        pytest.skip('no C++ compiler: the fused kernel cannot be built here')
    extension = extension_module.load_extension()
    assert extension is not None, f'fused kernel build failed: {extension_module._load_error!r}'
    return extension


@pytest.fixture
def no_fused_env(monkeypatch):
    """Tests that check dispatch must not see a user's MMDYSAMPLE_FUSED=0."""
    monkeypatch.delenv(extension_module.FUSED_ENV_VAR, raising=False)


@pytest.fixture
def fresh_loader(monkeypatch):
    """Forget the loaded extension for this test (restored afterwards)."""
    monkeypatch.delenv(extension_module.FUSED_ENV_VAR, raising=False)
    monkeypatch.setattr(extension_module, '_extension', None)
    monkeypatch.setattr(extension_module, '_load_error', None)
