"""Fixture of the demo tests: a tiny synthetic data set (helpers: demo_helpers.py)."""
import pytest

import demo_helpers  # noqa: F401  (puts the checkout on sys.path)


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """8 training and 4 validation 128x128 scenes in all three layouts."""
    from mmdysample.datasets import generate_synthetic_dataset
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate_synthetic_dataset(root, seed=0, num_train=8, num_val=4)
    return root
