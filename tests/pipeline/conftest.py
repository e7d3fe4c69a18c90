from __future__ import annotations

import pytest

from strata.storage import DirectoryFrontend
from tests.pipeline import toys


@pytest.fixture
def calls():
    """compute() calls per plugin class, from zero."""
    toys.CALLS.clear()
    yield toys.CALLS
    toys.CALLS.clear()


@pytest.fixture
def frontend(tmp_path):
    return DirectoryFrontend(str(tmp_path / "store"))
