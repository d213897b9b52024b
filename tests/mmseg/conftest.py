"""Shared settings for the mmseg integration tests."""
import pytest
import torch
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def single_thread():
    """Run each test with one intra-op thread, then restore the previous setting.

    The models here are tiny: extra OpenMP threads bring no speed, and on a busy 2-core
    machine their spin-waiting made a tiny MaskFormer step 20x slower (6.5 s vs 0.35 s).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build in mmseg's scope whatever scope earlier tests (mmdet's) left current."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield
