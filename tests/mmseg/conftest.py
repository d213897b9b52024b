"""Shared settings for the mmseg integration tests."""
import pytest


@pytest.fixture(autouse=True)
def mmseg_test_settings(one_intra_op_thread, mmseg_default_scope):
    """One intra-op thread and mmseg's default scope (tests/conftest.py)."""
    yield
