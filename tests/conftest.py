"""Test tiers: `pytest -m "not slow"` runs the unit tests in about a minute on 2 cores.

Slow tests are marked where they are written (`@pytest.mark.slow`), except the chapters:
nbval collects one item per cell from each `book/*.ipynb`, and no decorator can reach
them, so every item collected from a notebook is marked slow here.
"""
import pytest


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects (the mark plugin's hook)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
