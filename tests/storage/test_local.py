"""The conformance suites on local disk (plain path and file:// URL) and memory://."""

from __future__ import annotations

import pytest

from tests.conformance import BackendTests, FrontendTests, SaverTests
from tests.helpers import LOCAL_URL_KINDS, local_url
from tests.stores import URLStore


@pytest.fixture(params=LOCAL_URL_KINDS)
def url(request, tmp_path):
    return local_url(request.param, tmp_path, "test")


class TestLocalBackend(URLStore, BackendTests):
    pass


class TestLocalSaver(URLStore, SaverTests):
    pass


class TestDirectoryFrontend(URLStore, FrontendTests):
    pass
