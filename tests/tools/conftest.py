"""Load the scripts of tools/ as modules (tools/ is not a package)."""
import importlib.util
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(REPO, 'tools')
if TOOLS not in sys.path:  # the tools import their shared helpers as `import tool_helpers`
    sys.path.append(TOOLS)


def load_tool(name: str):
    module_name = f'mmdysample_tool_{name}'
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name,
                                                  os.path.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


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
