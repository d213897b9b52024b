"""Suite-wide: the order in which tests start.

``make test`` runs the suite in 2 pytest-xdist workers with ``--dist loadgroup``
(pyproject.toml): tests are handed out one at a time (or one ``xdist_group`` at a time,
for tests that share an expensive module fixture) in collection order. Tests marked
``slow`` (those that train, start interpreters or build full-size models) are moved to the
front, so that both workers take them first and the many fast tests fill in around them:
no minute-long test starts last and leaves the other worker idle.
"""
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # stable: within the slow and the fast tests, files and tests keep their order
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)
