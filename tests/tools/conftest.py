"""Fixtures of the tool tests (the tools load as modules: tools_testing.load_tool)."""
import pytest

from tools_testing import load_tool


@pytest.fixture(scope='session')
def benchmark_tool():
    return load_tool('benchmark')


@pytest.fixture(scope='session')
def analyze_tool():
    return load_tool('analyze_model')


@pytest.fixture(scope='session')
def visualize_tool():
    return load_tool('visualize_sampling')


@pytest.fixture(scope='session')
def convert_tool():
    return load_tool('convert_checkpoint')
