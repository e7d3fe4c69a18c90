"""The conformance suites on local disk (plain path and file:// URL) and memory://."""

from __future__ import annotations

import uuid

import pytest

from storage import DirectoryFrontend
from tests.conformance import BackendTests, FrontendTests, SaverTests


@pytest.fixture(params=["path", "file_url", "memory"])
def url(request, tmp_path):
    if request.param == "path":
        return str(tmp_path / "store")
    if request.param == "file_url":
        return f"file://{tmp_path}/store"
    return f"memory://strata-test-{uuid.uuid4().hex}"


class TestLocalBackend(BackendTests):
    pass


class TestLocalSaver(SaverTests):
    pass


class TestDirectoryFrontend(FrontendTests):
    @pytest.fixture
    def make_frontend(self, url):
        return lambda **kw: DirectoryFrontend(url, chunk_target_mb=0.25, **kw)
