"""The conformance suites on local disk (plain path and file:// URL) and memory://."""

from __future__ import annotations

import pytest

from strata.storage import DirectoryFrontend
from tests.conformance import BackendTests, FrontendTests, SaverTests
from tests.helpers import LOCAL_URL_KINDS, local_url


@pytest.fixture(params=LOCAL_URL_KINDS)
def url(request, tmp_path):
    return local_url(request.param, tmp_path, "test")


class TestLocalBackend(BackendTests):
    pass


class TestLocalSaver(SaverTests):
    pass


class TestDirectoryFrontend(FrontendTests):
    @pytest.fixture
    def make_frontend(self, url):
        return lambda **kw: DirectoryFrontend(url, chunk_target_mb=0.25, **kw)
