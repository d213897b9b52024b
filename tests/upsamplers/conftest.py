"""Fixtures shared by the upsampler tests."""
import pytest
import torch

import mmdysample  # noqa: F401  (registers every upsampler)


@pytest.fixture(autouse=True)
def seeded_rng():
    """Every test starts from the same global RNG state, so random weights and inputs (and the
    margins the tests assert on them) are reproducible whatever ran before."""
    torch.manual_seed(0)
    yield
